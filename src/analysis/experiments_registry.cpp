// The registry of `moe experiment`: one line per configuration (see experiments.h). The widths
// are chosen so that the configurations a claim compares have equal active FFN width where the
// claim says so; every table prints the parameter and FLOP counts, so the reader can check.
#include "analysis/experiments.h"

namespace moe {

namespace {

// A dense model's FFN is --expert-ffn wide when --experts is 1.
constexpr const char* kDense512 = "--experts 1 --expert-ffn 512";
constexpr const char* kTop2x256 = "--experts 8 --top-k 2 --expert-ffn 256 --renorm";

std::vector<Experiment> make_registry() {
  std::vector<Experiment> x;
  x.push_back({"moe-vs-dense", "MoE against dense models",
               "An MoE beats a dense model of equal active FLOPs; a dense model of equal total "
               "parameters is the upper reference (Switch Transformer, Fedus et al. 2021). The MoE "
               "rows vary what moves the step where an MoE overtakes the dense model: gate "
               "scaling, top-k with finer experts, the learning rate, and tokens per expert (4 "
               "experts see twice as many tokens each as 8).",
               "", 300, 0, 60, 0, EXP_METRIC_HORIZON, "dense, FFN 512 (equal active)", {},
               {{"dense, FFN 512 (equal active)", kDense512},
                {"dense, FFN 4096 (equal total)", "--experts 1 --expert-ffn 4096"},
                {"8 x 512 top-1", "--experts 8 --top-k 1 --expert-ffn 512"},
                {"8 x 512 top-1, gate x 8", "--experts 8 --top-k 1 --expert-ffn 512 --route-scale 8"},
                {"8 x 256 top-2, renormalised", kTop2x256},
                {"8 x 256 top-2, renormalised, lr 6e-3", std::string(kTop2x256) + " --lr 0.006"},
                {"4 x 256 top-2, renormalised", "--experts 4 --top-k 2 --expert-ffn 256 --renorm"}}});
  x.push_back({"expert-count", "Number of experts at fixed active FLOPs",
               "At fixed active FLOPs, loss falls as the experts go 1 -> 4 -> 8 -> 16 -> 32 (Switch "
               "Transformer, Fig. 1). Here each token uses 2 experts of width 256 (active width "
               "512); the 1-expert row is the dense twin (one FFN of width 512).",
               "", 120, 0, 40, 0, 0, "", {},
               {{"1 (dense twin)", kDense512},
                {"4 experts", "--experts 4 --top-k 2 --expert-ffn 256 --renorm"},
                {"8 experts", kTop2x256},
                {"16 experts", "--experts 16 --top-k 2 --expert-ffn 256 --renorm"},
                {"32 experts", "--experts 32 --top-k 2 --expert-ffn 256 --renorm"}}});
  x.push_back({"fine-grained", "Fine-grained experts",
               "Splitting E experts of width F into mE experts of width F/m with top-mk keeps the "
               "FLOPs and helps (DeepSeekMoE, Dai et al. 2024).",
               "", 120, 0, 40, 0, 0, "", {},
               {{"8 x 512 top-2", "--experts 8 --top-k 2 --expert-ffn 512 --renorm"},
                {"16 x 256 top-4", "--experts 16 --top-k 4 --expert-ffn 256 --renorm"},
                {"32 x 128 top-8", "--experts 32 --top-k 8 --expert-ffn 128 --renorm"}}});
  x.push_back({"shared-expert", "Shared expert",
               "A shared expert helps (DeepSeekMoE) or does not (OLMoE, Muennighoff et al. 2024). "
               "Both rows use 4 experts of width 128 per token (active width 512).",
               "", 120, 0, 40, 0, 0, "", {},
               {{"16 x 128 top-4", "--experts 16 --top-k 4 --expert-ffn 128 --renorm"},
                {"1 shared + 16 x 128 top-3",
                 "--experts 16 --top-k 3 --expert-ffn 128 --renorm --shared-experts 1"}}});
  x.push_back({"routers", "Routers",
               "Ranking of the routers. DeepSeekMoE's ablation orders them dense > hash > Switch "
               "top-1 > GShard top-2 in loss; BASE (Lewis et al. 2021), Sinkhorn (S-BASE) and "
               "REINFORCE routing join them. Every MoE has 8 experts of width 512.",
               "", 120, 0, 40, 0, 0, "", {},
               {{"dense, FFN 512", kDense512},
                {"hash", "--experts 8 --top-k 1 --expert-ffn 512 --router hash"},
                {"random", "--experts 8 --top-k 1 --expert-ffn 512 --router random"},
                {"top-1 (Switch)", "--experts 8 --top-k 1 --expert-ffn 512"},
                {"top-2 (GShard)", "--experts 8 --top-k 2 --expert-ffn 512 --renorm"},
                {"expert choice", "--experts 8 --top-k 1 --expert-ffn 512 --router expert_choice"},
                {"BASE", "--experts 8 --top-k 1 --expert-ffn 512 --router base"},
                {"Sinkhorn", "--experts 8 --top-k 1 --expert-ffn 512 --router sinkhorn"},
                {"REINFORCE",
                 "--experts 8 --top-k 1 --expert-ffn 512 --router reinforce --rl-entropy 0.01"}}});
  x.push_back({"balancing", "Load balancing",
               "Without balancing the experts collapse; compared: Switch aux loss, the aux-loss-free "
               "bias (DeepSeek-V3), the sequence-wise loss and the device-level loss (DeepSeek-V2), "
               "on loss and on max/mean load. 8 experts of width 256, top-2.",
               kTop2x256, 120, 0, 40, 0, EXP_METRIC_LOAD, "", {},
               {{"none", "--aux-loss 0 --z-loss 0"},
                {"Switch aux 0.01", "--aux-loss 0.01"},
                {"aux-free bias", "--aux-loss 0 --router sigmoid_bias"},
                {"sequence-wise 0.01", "--aux-loss 0 --seq-aux-loss 0.01"},
                {"device-level 0.01, 4 devices", "--aux-loss 0 --device-loss 0.01 --devices 4"},
                {"Sinkhorn selection", "--aux-loss 0 --router sinkhorn"}}});
  x.push_back({"z-loss", "Router z-loss at a high learning rate",
               "At a high learning rate, the z-loss bounds the router logits and removes loss "
               "spikes (ST-MoE, Zoph et al. 2022). Learning rate 2e-2, 8 experts of width 256, top-2.",
               std::string(kTop2x256) + " --lr 0.02", 120, 0, 40, 0, EXP_METRIC_LOGIT, "", {},
               {{"no z-loss", "--z-loss 0"},
                {"z-loss 1e-3", "--z-loss 0.001"}}});
  x.push_back({"capacity", "Capacity factor",
               "Dropped fraction against loss for capacity factors 1.0 / 1.25 / 2.0 and dropless "
               "(Switch Transformer). Validation is dropless, as inference is; the loss with the "
               "training capacity is shown beside it. 8 experts of width 256, top-2.",
               kTop2x256, 120, 0, 40, 0, EXP_METRIC_DROPPED, "", {},
               {{"capacity 1.0", "--capacity-factor 1.0"},
                {"capacity 1.25", "--capacity-factor 1.25"},
                {"capacity 2.0", "--capacity-factor 2.0"},
                {"dropless", "--capacity-factor 0"}}});
  x.push_back({"upcycling", "Sparse upcycling",
               "An MoE upcycled from a dense checkpoint beats the same MoE trained from scratch, and "
               "overtakes the dense model continued for the same steps (Komatsuzaki et al. 2023). "
               "The dense model (FFN 512) trains first; the upcycled MoE has 8 copies of its FFN, "
               "top-2. Steps below are the continuation's.",
               "", 250, 150, 40, 30, EXP_METRIC_HORIZON, "dense, continued",
               {{"dense", kDense512}},
               {{"dense, continued", "", "dense"},
                {"upcycled MoE", "", "dense", "--experts 8 --top-k 2"},
                {"MoE from scratch", "--experts 8 --top-k 2 --expert-ffn 512 --renorm"}}});
  x.push_back({"fine-tuning", "Fine-tuning on one small genre",
               "Fine-tuning on one small genre overfits an MoE more than a dense model (a larger "
               "train/validation gap); freezing the experts and the router shrinks the gap. Both "
               "models are pretrained on the whole corpus, then fine-tuned at learning rate 1e-3 on "
               "the Brown genre 'humor' (9 documents; the last one is held out). Pretraining used "
               "the whole corpus, so it may have seen these documents.",
               "", 120, 200, 40, 40, EXP_METRIC_GAP, "",
               {{"dense", kDense512}, {"moe", kTop2x256}},
               {{"dense, fine-tuned", "--lr 0.001", "dense", "", true},
                {"MoE, fine-tuned", "--lr 0.001", "moe", "", true},
                {"MoE, experts and router frozen", "--lr 0.001 --freeze experts,router", "moe", "",
                 true}}});
  x.push_back({"mtp", "Multi-token prediction",
               "DeepSeek-V3's multi-token prediction (one MTP module, D = 1) changes the main "
               "model's next-token loss little, and its module drafts tokens that self-speculative "
               "decoding accepts often (DeepSeek-V3 report: 85-90% acceptance of the second "
               "token). Acceptance is measured on held-out text by `moe eval` (teacher forcing: "
               "the draft for token i + 2 is accepted when it equals the main model's argmax at "
               "i + 1). 8 experts of width 256, top-2.",
               kTop2x256, 200, 0, 40, 0, EXP_METRIC_ACCEPT, "", {},
               {{"no MTP", ""},
                {"MTP D = 1, weight 0.1", "--mtp 1 --mtp-weight 0.1"},
                {"MTP D = 1, weight 0.3", "--mtp 1 --mtp-weight 0.3"}}});
  return x;
}

}  // namespace

const std::vector<Experiment>& experiment_registry() {
  static const std::vector<Experiment> r = make_registry();
  return r;
}

const Experiment* experiment_find(const std::string& name) {
  for (const Experiment& e : experiment_registry())
    if (e.name == name) return &e;
  return nullptr;
}

std::string experiment_names() {
  std::string s;
  for (const Experiment& e : experiment_registry()) s += (s.empty() ? "" : ", ") + e.name;
  return s;
}

ExpMode experiment_mode(bool quick) {
  ExpMode m;
  m.quick = quick;
  if (quick) {
    m.flags = "--layers 2 --d-model 64 --heads 4 --batch 8 --seq 64 --warmup 5 --eval-every 10 "
              "--eval-windows 16 --save-every 0";
    m.vocab = 1024;
    m.seq = 64;
    m.describe = "2 layers, d 64, 4 heads, vocabulary 1,024, batch 8 x 64 tokens (512 tokens "
                 "per step), learning rate 3e-3 with 5 warmup steps and a cosine decay, "
                 "validation on 16 held-out windows every 10 steps";
  } else {
    m.flags = "--layers 4 --d-model 128 --heads 4 --batch 16 --seq 128 --warmup 30 "
              "--eval-every 25 --eval-windows 64 --save-every 0";
    m.vocab = 4096;
    m.seq = 128;
    m.describe = "4 layers, d 128, 4 heads, vocabulary 4,096, batch 16 x 128 tokens (2,048 "
                 "tokens per step), learning rate 3e-3 with 30 warmup steps and a cosine decay, "
                 "validation on 64 held-out windows every 25 steps";
  }
  return m;
}

}  // namespace moe
