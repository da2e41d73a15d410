// `moe train` and `moe tokenizer train`.
#include <csignal>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "text/bpe_train.h"
#include "train/corpus.h"
#include "train/trainer.h"
#include "train/upcycle.h"

namespace moe {

namespace {

std::atomic<bool> g_stop{false};
void on_sigint(int) { g_stop.store(true); }

}  // namespace

CommandRun cmd_train_register(CLI::App* app) {
  auto a = std::make_shared<TrainArgs>();
  app->add_option("--data", a->data, "corpus: Brown Corpus folder, .txt file or folder, or a prepared data folder")->required();
  app->add_option("--out", a->out, "output folder (model, checkpoint, metrics.jsonl)")->required();
  app->add_option("--steps", a->steps, "optimizer steps")->capture_default_str();
  app->add_option("--seed", a->seed, "seed for weights, batches and router noise")->capture_default_str();
  app->add_option("--init", a->init, "start from this checkpoint's weights (e.g. an upcycled model)");
  app->add_flag("--resume", a->resume, "continue from OUT/checkpoint if present");
  app->add_option("--vocab", a->vocab, "BPE vocabulary size when the data must be tokenized")->capture_default_str();
  app->add_option("--threads", a->threads, "threads (0 = all cores)")->capture_default_str();
  // model
  app->add_option("--layers", a->layers, "decoder layers")->capture_default_str();
  app->add_option("--d-model", a->d_model, "model width")->capture_default_str();
  app->add_option("--heads", a->heads, "attention heads")->capture_default_str();
  app->add_option("--kv-heads", a->kv_heads, "key/value heads (0 = --heads)")->capture_default_str();
  app->add_option("--head-dim", a->head_dim, "head width (0 = d-model / heads)")->capture_default_str();
  app->add_option("--experts", a->experts, "routed experts per MoE layer (1 = dense model: FFN width --expert-ffn, --top-k ignored)")->capture_default_str();
  app->add_option("--top-k", a->top_k, "experts per token")->capture_default_str();
  app->add_option("--expert-ffn", a->expert_ffn, "expert FFN width (0 = 2 x d-model); many narrow experts = fine-grained")->capture_default_str();
  app->add_option("--shared-experts", a->shared_experts, "shared experts per MoE layer")->capture_default_str();
  app->add_option("--shared-ffn", a->shared_ffn, "width of one shared expert (0 = --expert-ffn)")->capture_default_str();
  app->add_flag("--shared-gate", a->shared_gate, "sigmoid gate on the shared expert (Qwen2-MoE)");
  app->add_option("--dense-ffn", a->dense_ffn, "FFN width of dense layers (0 = active width of an MoE layer)")->capture_default_str();
  app->add_option("--moe-every", a->moe_every, "every n-th layer is MoE")->capture_default_str();
  app->add_option("--first-dense", a->first_dense, "the first k layers are dense")->capture_default_str();
  app->add_option("--qk-norm", a->qk_norm, "q/k RMSNorm: head, full or none")->capture_default_str();
  app->add_flag("--tie-embeddings", a->tie_embeddings, "share the input embedding and the output head");
  app->add_option("--init-std", a->init_std, "weight init standard deviation")->capture_default_str();
  // routing and balancing
  app->add_option("--router", a->router,
                  "softmax_topk, topk_softmax, sigmoid_bias (DeepSeek-V3 aux-loss-free), group_limited, "
                  "noisy_topk, expert_choice, hash, random, base (balanced assignment, top-1), "
                  "sinkhorn (Megatron) or reinforce (sampled, score-function gradient)")->capture_default_str();
  app->add_flag("--renorm", a->renorm, "renormalise the top-k weights (softmax_topk, sinkhorn, reinforce)");
  app->add_option("--rl-entropy", a->losses.rl_entropy, "reinforce: entropy bonus coefficient of the routing policy")->capture_default_str();
  app->add_option("--rl-baseline-decay", a->rl_decay, "reinforce: decay of the reward baseline's moving average")->capture_default_str();
  app->add_option("--route-scale", a->route_scale, "routed scaling factor")->capture_default_str();
  app->add_option("--n-group", a->n_group, "expert groups for group-limited routing")->capture_default_str();
  app->add_option("--topk-group", a->topk_group, "groups kept per token")->capture_default_str();
  app->add_option("--mtp", a->mtp, "multi-token prediction modules (DeepSeek-V3), each predicting one more token ahead")->capture_default_str();
  app->add_option("--mtp-weight", a->mtp_weight, "MTP loss weight lambda: the loss adds lambda / D x the modules' cross-entropies")->capture_default_str();
  app->add_option("--aux-loss", a->losses.aux, "Switch load-balancing loss alpha (Megatron normalisation)")->capture_default_str();
  app->add_option("--z-loss", a->losses.z, "router z-loss beta")->capture_default_str();
  app->add_option("--seq-aux-loss", a->losses.seq_aux, "DeepSeek sequence-wise balance loss alpha")->capture_default_str();
  app->add_option("--device-loss", a->losses.device, "device-level balance loss alpha")->capture_default_str();
  app->add_option("--comm-loss", a->losses.comm,
                  "DeepSeek-V2 communication balance loss alpha (over --devices, or the ranks "
                  "under mpirun)")->capture_default_str();
  app->add_option("--devices", a->losses.n_devices,
                  "expert groups (devices) for --device-loss and --route-devices in one process; "
                  "under mpirun the ranks are the devices")->capture_default_str();
  app->add_option("--route-devices", a->route_devices,
                  "device-limited routing (DeepSeek-V2): a token's experts come from at most M "
                  "devices (0 = off)")->capture_default_str();
  app->add_option("--capacity-factor", a->losses.capacity_factor, "expert capacity factor; tokens over capacity are dropped (0 = dropless)")->capture_default_str();
  app->add_option("--ep", a->ep,
                  "under mpirun: expert-parallel groups of this many ranks, data parallelism "
                  "across them (0 = every rank in one group)")->capture_default_str();
  app->add_option("--bias-rate", a->bias_rate, "aux-loss-free bias step gamma (sigmoid_bias)")->capture_default_str();
  app->add_flag("--bias-center", a->bias_center, "subtract the mean bias update (torchtitan variant)");
  // optimisation
  app->add_option("--batch", a->batch, "sequences per micro-batch")->capture_default_str();
  app->add_option("--seq", a->seq, "tokens per sequence")->capture_default_str();
  app->add_option("--accum", a->accum, "micro-batches per optimizer step")->capture_default_str();
  app->add_option("--lr", a->lr, "peak learning rate")->capture_default_str();
  app->add_option("--min-lr-frac", a->min_lr_frac, "final learning rate as a fraction of --lr")->capture_default_str();
  app->add_option("--warmup", a->warmup, "warmup steps")->capture_default_str();
  app->add_option("--weight-decay", a->adam.weight_decay, "AdamW weight decay (not on norms and biases)")->capture_default_str();
  app->add_option("--freeze", a->freeze,
                  "fine-tuning: comma list of parameter groups to freeze (no gradient, no "
                  "optimizer state): embeddings, attention, norms, router, experts, "
                  "shared-experts, dense-mlp, lm-head, mtp");
  app->add_option("--lr-groups", a->lr_groups,
                  "per-group learning-rate multipliers, e.g. experts=0.1,router=0.5 (groups as "
                  "--freeze)");
  app->add_option("--clip", a->clip, "gradient clipping global norm (0 = off)")->capture_default_str();
  app->add_option("--eval-every", a->eval_every, "steps between validation passes")->capture_default_str();
  app->add_option("--eval-windows", a->eval_windows, "validation sequences")->capture_default_str();
  app->add_option("--save-every", a->save_every, "steps between checkpoints")->capture_default_str();
  app->add_option("--snapshot-every", a->snapshot_every,
                  "export the model to OUT/snapshots/step-N every N steps (0 = never), e.g. for "
                  "moe inspect --compare")
      ->capture_default_str();
  app->add_flag("--quiet", a->quiet, "no progress line");
  app->add_flag("--dense-twin", a->dense_twin,
                "train the dense twin of the MoE the flags describe: one FFN as wide as its "
                "active FFN (top-k x --expert-ffn + shared experts), same data, steps, lr, seed");
  app->add_option("--stop-after", a->stop_after, "behave as if interrupted after this many steps (tests resume)")->capture_default_str();
  return [a]() {
    g_stop.store(false);
    struct sigaction sa = {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    return train_run(*a, &g_stop);
  };
}

CommandRun cmd_tokenizer_train_register(CLI::App* app) {
  struct Opts {
    std::string data, out = "tokenizer.json";
    int vocab = 4096;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--data", o->data, "corpus: Brown Corpus folder, .txt file or folder")->required();
  app->add_option("--vocab", o->vocab, "vocabulary size (256 bytes + merges + special tokens)")->capture_default_str();
  app->add_option("--out", o->out, "tokenizer.json to write")->capture_default_str();
  return [o]() {
    Corpus corpus;
    corpus_load(&corpus, o->data);
    std::vector<std::string> clean;
    for (const Document& d : corpus.docs) clean.push_back(utf8_sanitize(d.text));
    std::vector<std::string_view> texts(clean.begin(), clean.end());
    BpeModel m;
    BpeTrainParams p;
    p.vocab_size = o->vocab;
    bpe_train(&m, texts, p);
    const std::string j = bpe_tokenizer_json(m);
    write_file_atomic(o->out, j.data(), j.size());
    std::fprintf(stderr, "tokenizer: %zu tokens (%zu merges) from %zu documents -> %s\n",
                 m.tokens.size(), m.merges.size(), corpus.docs.size(), o->out.c_str());
    return 0;
  };
}

CommandRun cmd_upcycle_register(CLI::App* app) {
  struct Opts {
    std::string dense, out;
    UpcycleParams p;
    bool no_renorm = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--dense", o->dense, "dense checkpoint (e.g. trained with --experts 1)")->required();
  app->add_option("--out", o->out, "folder for the upcycled checkpoint")->required();
  app->add_option("--experts", o->p.experts, "routed experts per layer")->capture_default_str();
  app->add_option("--top-k", o->p.top_k, "experts per token")->capture_default_str();
  app->add_option("--granularity", o->p.granularity, "cut the dense FFN into G slices (fine-grained experts)")->capture_default_str();
  app->add_option("--shared", o->p.shared, "slices carved out as one shared expert")->capture_default_str();
  app->add_option("--noise", o->p.noise, "relative Gaussian noise on the routed experts' weights")->capture_default_str();
  app->add_flag("--no-renorm", o->no_renorm, "softmax top-k without renormalising the weights");
  app->add_option("--router-std", o->p.router_std, "random router init (0 = zero router, exact at step 0)")->capture_default_str();
  app->add_option("--seed", o->p.seed, "seed for noise and router init")->capture_default_str();
  return [o]() {
    o->p.renorm = !o->no_renorm;
    upcycle(o->dense, o->out, o->p);
    std::fprintf(stderr, "upcycled %s -> %s: %d experts (top-%d), granularity %d, %d shared slice(s)\n",
                 o->dense.c_str(), o->out.c_str(), o->p.experts, o->p.top_k, o->p.granularity,
                 o->p.shared);
    return 0;
  };
}

}  // namespace moe
