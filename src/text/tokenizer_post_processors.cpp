// Post-processors of tokenizer.json for a single sequence: TemplateProcessing, Bert/Roberta
// ([CLS] A [SEP] / <s> A </s>), ByteLevel (ids unchanged) and Sequence.
#include "text/tokenizer.h"

namespace moe {

namespace tok {

void post_process(const TokPostProcessor& pp, std::vector<int32_t>* ids, bool add_special) {
  switch (pp.kind) {
    case TokPostKind::None:
    case TokPostKind::ByteLevel:
      return;
    case TokPostKind::Sequence:
      for (const TokPostProcessor& c : pp.children) post_process(c, ids, add_special);
      return;
    case TokPostKind::Template: {
      // Rust applies the template even without special tokens: sequence pieces are kept, special
      // pieces are dropped. A single input has no sequence B.
      std::vector<int32_t> out;
      out.reserve(ids->size() + 4);
      for (const TokTemplatePiece& p : pp.single) {
        if (p.is_special) {
          if (add_special) out.insert(out.end(), p.ids.begin(), p.ids.end());
        } else if (p.sequence == 0) {
          out.insert(out.end(), ids->begin(), ids->end());
        }
      }
      ids->swap(out);
      return;
    }
    case TokPostKind::Bert:
    case TokPostKind::Roberta:
      if (!add_special) return;
      ids->insert(ids->begin(), pp.cls_id);
      ids->push_back(pp.sep_id);
      return;
  }
}

}  // namespace tok

}  // namespace moe
