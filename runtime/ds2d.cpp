// runtime/ds2d.cpp — DS2D: the pieces of ds2d.h, and the controller behind the kiln_ds2d_*
// C API (kiln.h), which drafts, picks a tree template, runs its compiled verify entry over
// the session's streams, accepts and compacts the KV cache. docs/ds2d.md has the design.
#include "runtime/ds2d.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace kiln::ds2d {

// ---- n-gram drafter -------------------------------------------------------------------

uint64_t NgramDrafter::key(const int32_t* end, int n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
  for (const int32_t* t = end - n; t < end; ++t) {
    h ^= (uint64_t)(uint32_t)*t + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
  }
  return h;
}

void NgramDrafter::append(std::span<const int32_t> tokens) {
  for (int32_t t : tokens) {
    text_.push_back(t);
    const size_t end = text_.size();
    for (int n = n_min_; n <= n_max_ && (size_t)n <= end - text_start_; ++n)
      index_[key(text_.data() + end, n)].push_back((int32_t)end);
  }
}

void NgramDrafter::append_text(std::span<const int32_t> tokens) {
  if (!text_.empty()) text_.push_back(kTextEnd);  // no n-gram holds it: none spans two texts
  text_start_ = text_.size();
  append(tokens);
}

void NgramDrafter::truncate(size_t size) {
  size = std::max(size, text_start_);
  for (size_t end = text_.size(); end > size; --end)  // each end position was pushed last
    for (int n = n_min_; n <= n_max_ && (size_t)n <= end - text_start_; ++n) {
      auto it = index_.find(key(text_.data() + end, n));
      if (it == index_.end() || it->second.empty() || it->second.back() != (int32_t)end) continue;
      it->second.pop_back();
      if (it->second.empty()) index_.erase(it);
    }
  text_.resize(std::min(text_.size(), size));
}

std::vector<Candidate> NgramDrafter::draft_for(std::span<const int32_t> context, int max_len,
                                               int max_candidates) const {
  std::vector<Candidate> out;
  const size_t size = context.size();
  if (max_len < 1 || max_candidates < 1) return out;
  float trust = 1.0f;  // shorter matches than the longest one found are trusted less
  for (int n = n_max_; n >= n_min_ && (int)out.size() < max_candidates; --n) {
    if ((size_t)n > size) continue;
    auto it = index_.find(key(context.data() + size, n));
    if (it == index_.end()) continue;
    // The occurrences of the suffix (most recent first), their continuations merged.
    std::vector<std::pair<std::vector<int32_t>, int>> conts;
    int total = 0, scanned = 0;
    for (auto p = it->second.rbegin(); p != it->second.rend() && scanned < 64; ++p) {
      const size_t at = (size_t)*p;
      if (at >= text_.size() || text_[at] == kTextEnd) continue;  // nothing follows (or the suffix itself)
      if (!std::equal(text_.begin() + (long)(at - (size_t)n), text_.begin() + (long)at, context.end() - n))
        continue;  // a hash collision (or an n-gram across a kTextEnd)
      ++scanned;
      const auto stop = std::find(text_.begin() + (long)at,
                                  text_.begin() + (long)std::min(text_.size(), at + (size_t)max_len), kTextEnd);
      std::vector<int32_t> c(text_.begin() + (long)at, stop);
      ++total;
      bool merged = false;
      for (auto& [t, cnt] : conts)
        if (t == c) { ++cnt; merged = true; break; }
      if (!merged) conts.emplace_back(std::move(c), 1);
    }
    if (conts.empty()) continue;
    std::stable_sort(conts.begin(), conts.end(),  // most frequent first, then most recent
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    // `prob` is a standalone estimate (the controller replaces it by the source's learnt
    // accuracy): longer matches predict better; the share of occurrences splits the chance.
    const float per_token = std::min(0.9f, 0.35f + 0.15f * (float)n);
    bool first = true;
    int top_cnt = 1;
    for (auto& [toks, cnt] : conts) {
      if ((int)out.size() >= max_candidates) break;
      bool dup = false;
      for (auto& o : out) dup = dup || o.tokens == toks;
      if (dup) continue;
      Candidate c;
      c.tokens = toks;
      c.source = n;
      // Relative to this match length's best draft (its most frequent continuation not
      // already drafted by a longer match), on which the source's accuracy is learnt and
      // which already reflects the competition: the share of all occurrences counted it
      // twice and priced drafts 2-4x too low.
      if (first) top_cnt = cnt;
      c.weight = (float)cnt / (float)top_cnt;
      c.top = first;
      first = false;
      float p = trust * (float)cnt / (float)total;
      for (size_t i = 0; i < toks.size(); ++i) c.prob.push_back(p *= per_token);
      out.push_back(std::move(c));
    }
    trust *= 0.5f;
  }
  return out;
}

// ---- token recycling ------------------------------------------------------------------

void top_k(std::span<const float> logits, int k, int32_t* ids, float* values) {
  if (k <= 0) return;
  for (int i = 0; i < k; ++i) { ids[i] = -1; values[i] = -INFINITY; }
  bool full = false;
  auto consider = [&](size_t t) {
    const float x = logits[t];
    if (full && !(x > values[k - 1])) return;
    int at = k - 1;  // passes only smaller ones: of equal logits the lower id stays first
    while (at > 0 && (ids[at - 1] < 0 || x > values[at - 1])) {
      ids[at] = ids[at - 1];
      values[at] = values[at - 1];
      --at;
    }
    ids[at] = (int32_t)t;
    values[at] = x;
    full = ids[k - 1] >= 0;
  };
  // Blocks of 64 whose maximum (eight lanes, a loop the compiler vectorises, as in
  // Sampler::argmax) does not beat the k-th largest so far are skipped whole: once the
  // first blocks are in, nearly all are. Called on every row a step computes.
  constexpr size_t kBlock = 64;
  const size_t n = logits.size();
  size_t t = 0;
  for (; t + kBlock <= n; t += kBlock) {
    if (full) {
      float m[8];
      for (int l = 0; l < 8; ++l) m[l] = logits[t + (size_t)l];
      for (size_t i = 8; i < kBlock; i += 8)
        for (int l = 0; l < 8; ++l) m[l] = logits[t + i + (size_t)l] > m[l] ? logits[t + i + (size_t)l] : m[l];
      float mx = m[0];
      for (int l = 1; l < 8; ++l) mx = m[l] > mx ? m[l] : mx;
      if (!(mx > values[k - 1])) continue;
    }
    for (size_t i = 0; i < kBlock; ++i) consider(t + i);
  }
  for (; t < n; ++t) consider(t);
}

void SuccessorTable::reset(int32_t n_vocab) {
  next_.assign((size_t)std::max(n_vocab, 0) * kWidth, -1);
  rel_.assign(next_.size(), 0.0f);
}

void SuccessorTable::observe(int32_t token, std::span<const float> logits) {
  if (token < 0 || (size_t)token * kWidth >= next_.size() || logits.size() < (size_t)kWidth) return;
  int32_t* ids = next_.data() + (size_t)token * kWidth;
  float* rel = rel_.data() + (size_t)token * kWidth;
  int32_t top[kWidth];
  float v[kWidth];
  top_k(logits, kWidth, top, v);
  if (!std::isfinite(v[0])) return;  // no usable prediction: keep what the table had
  for (int i = 0; i < kWidth; ++i) {
    ids[i] = top[i];
    rel[i] = top[i] >= 0 && std::isfinite(v[i]) ? std::exp(v[i] - v[0]) : 0.0f;
  }
}

std::vector<Candidate> SuccessorTable::draft(int32_t root, int max_len, int max_candidates,
                                             int32_t source) const {
  std::vector<Candidate> out;
  const size_t v = next_.size() / kWidth;
  if (max_len < 1 || max_candidates < 1 || root < 0 || (size_t)root >= v) return out;
  // `prefix` then successor `rank` of `from` (the prefix's last token, or the root), then
  // first choices up to max_len.
  auto chain = [&](std::vector<int32_t> prefix, int32_t from, int rank) {
    const int32_t first = next_[(size_t)from * kWidth + (size_t)rank];
    if (first < 0) return;
    Candidate c;
    c.source = source;
    c.weight = rel_[(size_t)from * kWidth + (size_t)rank];
    c.top = out.empty();
    c.tokens = std::move(prefix);
    c.tokens.push_back(first);
    while ((int)c.tokens.size() < max_len) {
      const int32_t t = next_[(size_t)c.tokens.back() * kWidth];
      if (t < 0) break;
      c.tokens.push_back(t);
    }
    c.prob.assign(c.tokens.size(), 0.0f);  // set from the source's accuracy by the caller
    out.push_back(std::move(c));
  };
  chain({}, root, 0);
  if (out.empty()) return out;
  const std::vector<int32_t> main = out[0].tokens;
  // The alternatives: the root's other successors and the main chain's second choices,
  // likeliest first (a distant third successor of the root is worth less than a close
  // second choice deeper down), as many as the cap leaves room for.
  for (int r = 1; r < kWidth; ++r) chain({}, root, r);
  for (size_t d = 1; d < main.size(); ++d)
    chain(std::vector<int32_t>(main.begin(), main.begin() + (long)d), main[d - 1], 1);
  std::stable_sort(out.begin() + 1, out.end(),
                   [](const Candidate& a, const Candidate& b) { return a.weight > b.weight; });
  if ((int)out.size() > max_candidates) out.resize((size_t)max_candidates);
  return out;
}

// ---- draft tree -----------------------------------------------------------------------

void DraftTree::reset(int32_t root_token) {
  nodes.clear();
  Node r;
  r.token = root_token;
  nodes.push_back(r);
}

void DraftTree::add(const Candidate& c) {
  int32_t u = 0;
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    int32_t next = -1;
    for (int32_t k : nodes[(size_t)u].children)
      if (nodes[(size_t)k].token == c.tokens[i]) { next = k; break; }
    const float p = i < c.prob.size() ? c.prob[i] : 0.0f;
    if (next < 0) {
      Node n;
      n.token = c.tokens[i];
      n.parent = u;
      n.prob = std::min(p, nodes[(size_t)u].prob);
      next = (int32_t)nodes.size();
      nodes.push_back(n);
      nodes[(size_t)u].children.push_back(next);
    } else {
      // Drafts that agree are not independent evidence (the n-gram matches of several
      // lengths mostly propose the same continuation): the likelier one counts.
      Node& n = nodes[(size_t)next];
      n.prob = std::min(std::max(n.prob, p), nodes[(size_t)u].prob);
    }
    u = next;
  }
}

void DraftTree::sort() {
  for (auto& n : nodes)
    std::stable_sort(n.children.begin(), n.children.end(),
                     [&](int32_t a, int32_t b) { return nodes[(size_t)a].prob > nodes[(size_t)b].prob; });
}

Shape Shape::from_parents(std::span<const int32_t> parent) {
  Shape s;
  s.n_nodes = (int32_t)parent.size();
  s.parent.assign(parent.begin(), parent.end());
  s.depth.assign(parent.size(), 0);
  s.children.assign(parent.size(), {});
  for (size_t j = 1; j < parent.size(); ++j) {
    s.depth[j] = s.depth[(size_t)parent[j]] + 1;
    s.children[(size_t)parent[j]].push_back((int32_t)j);
  }
  return s;
}

Filled fill(const DraftTree& tree, const Shape& shape) {
  const size_t n = (size_t)shape.n_nodes;
  Filled f;
  f.tokens.assign(n, tree.nodes[0].token);
  f.valid.assign(n, 0);
  f.prob.assign(n, 0.0f);
  std::vector<int32_t> at(n, -1);         // tree node held by template node j
  std::vector<size_t> used(tree.nodes.size(), 0);  // children of a tree node handed out
  at[0] = 0;
  f.valid[0] = 1;
  f.prob[0] = 1.0f;
  for (size_t j = 1; j < n; ++j) {
    const int32_t tp = at[(size_t)shape.parent[j]];
    if (tp < 0) continue;
    const auto& kids = tree.nodes[(size_t)tp].children;
    if (used[(size_t)tp] >= kids.size()) continue;
    const int32_t k = kids[used[(size_t)tp]++];
    at[j] = k;
    f.tokens[j] = tree.nodes[(size_t)k].token;
    f.valid[j] = 1;
    f.prob[j] = tree.nodes[(size_t)k].prob;
    f.expected += f.prob[j];
    f.max_depth = std::max(f.max_depth, shape.depth[j]);
  }
  return f;
}

// ---- acceptance -----------------------------------------------------------------------

int32_t accept_children(TokenDistribution& d, std::span<const int32_t> kids, Sampler& sampler,
                        int32_t* accepted_index) {
  *accepted_index = -1;
  double mass = 0;  // the probabilities stay unnormalised; mass is their sum
  for (double p : d.probs) mass += p;
  for (size_t i = 0; i < kids.size(); ++i) {
    size_t at = d.ids.size();
    for (size_t j = 0; j < d.ids.size(); ++j)
      if (d.ids[j] == kids[i]) { at = j; break; }
    if (at == d.ids.size() || d.probs[at] <= 0) continue;  // p(x) = 0: always rejected
    if (sampler.uniform() * mass < d.probs[at]) {
      *accepted_index = (int32_t)i;
      return kids[i];
    }
    mass -= d.probs[at];
    d.probs[at] = 0;
    if (mass <= 0) break;
  }
  if (mass <= 1e-300) {  // every token with probability was drafted and rejected: cannot
    return kids.empty() ? d.ids[0] : kids.back();  // happen with exact arithmetic
  }
  return sampler.draw(d);
}

// ---- KV compaction --------------------------------------------------------------------

void compact_kv(uint8_t* stream_kv, std::span<const kiln_kv_block> blocks, int32_t base,
                std::span<const int32_t> path) {
  for (size_t m = 1; m < path.size(); ++m) {
    if (path[m] == (int32_t)m) continue;
    for (const kiln_kv_block& b : blocks) {
      uint8_t* rows = stream_kv + b.offset;
      std::memmove(rows + (uint64_t)(base + (int32_t)m) * b.row_bytes,
                   rows + (uint64_t)(base + path[m]) * b.row_bytes, (size_t)b.row_bytes);
    }
  }
}

}  // namespace kiln::ds2d

// ---- the controller (kiln_ds2d_* in kiln.h) -------------------------------------------

#include "runtime/session.h"

using kiln::rt::fail;
using kiln::rt::guarded;
using Clock = std::chrono::steady_clock;

namespace {

using StepFn = kiln_session::StepFn;

struct Template {
  kiln::ds2d::Shape shape;
  StepFn verify = nullptr;
  int32_t max_depth = 0;
  // Cost of a pass relative to a plain decode step. Ratios, not seconds: load on the
  // machine moves both alike. The ratio grows with the position, since every node of the
  // tree attends to the whole cache (a plain step: one row), so it is calibrated at two
  // positions (kiln_ds2d::model_ratio): ratio_lo at pos_lo, ratio_hi at pos_hi (up to
  // 512 rows further, calibrate). Timing only at the end of the context, as the first version did, priced an 8-node verify
  // at 3.4-4.4 decode steps when at the bench's positions (100-300 of 1024) it costs ~2,
  // and the controller never chose it. adjust[n]: running average of measured / modelled
  // ratio for n streams (0: not measured).
  double ratio_lo = 0, ratio_hi = 0;
  std::vector<double> adjust;
};

struct StreamState {
  kiln::ds2d::NgramDrafter ngram;
  // The text began before kiln_ds2d_clear_corpus: it never joins the corpus (the app may
  // have cleared it because another user comes next), even if the stream goes on from it.
  bool held_before_clear = false;
  explicit StreamState(int n_min, int n_max) : ngram(n_min, n_max) {}
};

// How often a source's drafts are right lately: the first token, and each next token
// given the ones before were right. Learnt from every step (a plain step still tells
// whether the first drafted token was the one decoded), shared by all streams.
struct Rate {
  double first = 0.5, next = 0.7;
};

struct EntryCtx {
  const kiln_step_args* args;
  StepFn fn;
};

void run_entry(void* ctx, int32_t tid, int32_t n) {
  auto* e = static_cast<EntryCtx*>(ctx);
  e->fn(e->args, tid, n);
}

double ewma(double old, double x, double w) { return old <= 0 ? x : (1 - w) * old + w * x; }

}  // namespace

// Draft sources index `kiln_ds2d::rates`: 0 early exit, n an n-gram match of n tokens in
// the stream's own text (n <= kMaxNgram), then token recycling, then kRecycleSource + n a
// match of n tokens in the corpus.
constexpr int32_t kMaxNgram = 16;
constexpr int32_t kRecycleSource = kMaxNgram + 1;
constexpr int32_t kCorpusSource = kRecycleSource;  // + n
constexpr int32_t kNumSources = kCorpusSource + kMaxNgram + 1;

struct kiln_ds2d {
  kiln_session* s = nullptr;
  kiln_ds2d_params p{};
  std::vector<Template> templates;
  StepFn draft = nullptr;             // early-exit entry (nullptr: none)
  std::vector<double> plain_cost;     // seconds per decode step by stream count
  int32_t pos_lo = 0, pos_hi = 0;     // where the verify ratios were calibrated
  double plain_lo = 0, plain_hi = 0;  // a one-stream plain step's seconds there
  double last_pos = 0;                // mean position of the streams in the last step
  std::vector<double> draft_ratio;    // early-exit pass / decode step, by stream count
  std::vector<StreamState> streams;
  std::vector<float> logits;          // max_rows x n_vocab
  std::vector<float> zeros;           // n_vocab: what acceptance reads in place of an unusable row
  std::vector<uint8_t> seen;
  int32_t max_step_tokens = 1;
  std::vector<Rate> rates;            // by draft source (kRecycleSource above)
  // Empty unless p.recycle. One table for all streams, whatever their adapters: a stream
  // on another adapter only makes the drafts of the others less often right.
  kiln::ds2d::SuccessorTable recycle;
  // Texts for every stream's n-gram lookup (kiln_ds2d_add_corpus, p.corpus_replies).
  kiln::ds2d::NgramDrafter corpus;
  int64_t corpus_tokens = 0;
  kiln_ds2d_stats stats{};
  void add_corpus(std::span<const int32_t> text) {
    corpus.append_text(text);
    corpus_tokens += (int64_t)text.size();
  }
  // An empty corpus whose drafts' accuracy is a guess until they have been checked.
  void clear_corpus() {
    for (int32_t n = 1; n <= kMaxNgram; ++n) rates[(size_t)(kCorpusSource + n)] = Rate{0.3, 0.6};
    corpus = kiln::ds2d::NgramDrafter(std::max(3, p.ngram_min), std::max(3, p.ngram_max));
    corpus_tokens = 0;
  }

  // Runs `fn` over the session's first `rows` scratch rows; returns its seconds.
  double run(StepFn fn, int64_t rows, int64_t logit_rows) {
    kiln_step_args& a = s->args;
    a.n_rows = rows;
    a.n_logit_rows = logit_rows;
    a.logits = logit_rows > 0 ? logits.data() : nullptr;
    EntryCtx ctx{&a, fn};
    const auto t0 = Clock::now();
    s->pool->run(run_entry, &ctx);
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
  // Seconds of a plain decode step for n streams: measured, else scaled from one.
  double plain(int32_t n) const {
    if (plain_cost[(size_t)n] > 0) return plain_cost[(size_t)n];
    return (plain_cost[1] > 0 ? plain_cost[1] : 1e-3) * (1.0 + 0.25 * (n - 1));
  }
  // Template t's verify pass over n streams at position pos, in decode steps: the
  // calibrated ratio at that position, times what the passes run so far say of it.
  double model_ratio(const Template& t, double pos) const {
    if (t.ratio_lo <= 0) return 0.6 + 0.4 * t.shape.n_nodes;  // never measured: a guess by rows
    if (t.ratio_hi <= 0 || pos_hi <= pos_lo || plain_lo <= 0 || plain_hi <= 0) return t.ratio_lo;
    // Both passes' times are linear in the rows attended: interpolated between the two
    // calibrated positions, extrapolated past the far one (calibrate stops short of the
    // end of a long context).
    // Slopes below zero are timing noise (more rows never cost less): taken as flat, so
    // that extrapolating far past pos_hi cannot drive either cost to zero or below.
    const double f = std::max(0.0, (pos - pos_lo) / (double)(pos_hi - pos_lo));
    const double v_lo = t.ratio_lo * plain_lo, v_hi = std::max(v_lo, t.ratio_hi * plain_hi);
    return (v_lo + f * (v_hi - v_lo)) / (plain_lo + f * (std::max(plain_lo, plain_hi) - plain_lo));
  }
  // The correction for n streams: measured, else one stream's, else none.
  static double adjust_of(const Template& t, int32_t n) {
    return t.adjust[(size_t)n] > 0 ? t.adjust[(size_t)n] : t.adjust[1] > 0 ? t.adjust[1] : 1.0;
  }
  double ratio(const Template& t, int32_t n, double pos) const { return adjust_of(t, n) * model_ratio(t, pos); }
  // Seconds of template t's verify pass for n streams at position pos.
  double cost(const Template& t, int32_t n, double pos) const { return ratio(t, n, pos) * plain(n); }
  double draft_cost(int32_t n) const {
    const double r = draft_ratio[(size_t)n] > 0 ? draft_ratio[(size_t)n] : draft_ratio[1];
    return (r > 0 ? r : 0.5) * plain(n);
  }
  std::span<const float> row_logits(int64_t r) const {
    const size_t v = (size_t)s->model->n_vocab;
    return {logits.data() + (size_t)r * v, v};
  }
};

namespace {

// Times each entry against the plain step on rows no stream has written: past the end
// of the emptiest stream's tokens (the rows are overwritten before any step reads
// them), there and kCalibrationSpan rows further on (or as far as the largest template
// fits in the context, if nearer). Three rounds of plain step, then each entry, at each of the two positions
// (after one round that pays the page faults); the median ratio per entry and position.
// Why not at the end of the context: a verify pass's cost grows linearly with the rows
// it attends (model_ratio extrapolates), and at 2048 rows the large templates made this
// 0.6 s of kiln_ds2d_init (now 0.3 s); five rounds instead of three added little over the
// running correction every pass applies.
constexpr int32_t kCalibrationSpan = 512;
constexpr int kCalibrationRounds = 3;

void calibrate(kiln_ds2d* d) {
  kiln_session* s = d->s;
  const kiln_compiled_model* c = s->code;
  int32_t stream = 0;
  for (int32_t k = 1; k < (int32_t)s->pos.size(); ++k)
    if (s->pos[(size_t)k] < s->pos[(size_t)stream]) stream = k;
  auto fill_rows = [&](const kiln::ds2d::Shape& sh, int32_t base) {
    for (int32_t j = 0; j < sh.n_nodes; ++j) {
      s->tokens[(size_t)j] = 0;
      s->positions[(size_t)j] = base + sh.depth[(size_t)j];
      s->streams[(size_t)j] = stream;
      s->adapter_slots[(size_t)j] = s->lora.stream_slot[(size_t)(stream)];
      s->logit_rows[(size_t)j] = j;
    }
  };
  const int32_t pos = s->pos[(size_t)stream];
  const kiln::ds2d::Shape one = kiln::ds2d::Shape::from_parents(std::vector<int32_t>{-1});
  int32_t largest = 1;
  for (const Template& t : d->templates) largest = std::max(largest, t.shape.n_nodes);
  // Every far pass starts here: the span past pos, or as far as the largest template
  // fits in the context (none, if that is not past pos).
  const int32_t far = (int32_t)std::min<int64_t>((int64_t)pos + kCalibrationSpan, c->max_context - largest);
  if (c->max_context - 1 < pos) return;
  const size_t T = d->templates.size();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  for (bool at_far : {false, true}) {
    if (at_far && far <= pos) break;
    const int32_t base = at_far ? far : pos;
    std::vector<std::vector<double>> ratios(T + 1);  // [T]: the draft entry
    std::vector<double> plains;
    for (int rep = 0; rep <= kCalibrationRounds; ++rep) {  // round 0 pays page faults: not counted
      fill_rows(one, base);
      const double p = d->run(s->step_entry(1), 1, 1);
      if (rep > 0) plains.push_back(p);
      for (size_t t = 0; t < T; ++t) {
        const Template& tm = d->templates[t];
        if (base + tm.shape.n_nodes > c->max_context || tm.shape.n_nodes > c->max_rows) continue;
        fill_rows(tm.shape, base);
        const double v = d->run(tm.verify, tm.shape.n_nodes, tm.shape.n_nodes);
        if (rep > 0) ratios[t].push_back(v / p);
      }
      if (d->draft && !at_far) {
        fill_rows(one, pos);
        const double v = d->run(d->draft, 1, 1);
        if (rep > 0) ratios[T].push_back(v / p);
      }
    }
    for (size_t t = 0; t < T; ++t) (at_far ? d->templates[t].ratio_hi : d->templates[t].ratio_lo) = median(ratios[t]);
    (at_far ? d->plain_hi : d->plain_lo) = median(plains);
    if (!at_far) {
      d->plain_cost[1] = median(plains);
      if (d->draft) d->draft_ratio[1] = median(ratios[T]);
    }
  }
  d->pos_lo = pos;
  d->pos_hi = far > pos ? far : pos;
}

// Logit row r of the pass just run, which stream sm takes a token from, must be usable
// (no NaN, no +inf). Otherwise the step fails, and every stream stays as it was before
// the step (the KV rows the pass wrote lie past the streams' ends).
kiln_status check_logits(const kiln_ds2d* d, int64_t r, int32_t sm) {
  const auto lg = d->row_logits(r);
  if (int64_t bad; !kiln::Sampler::usable(lg, &bad))
    return fail(KILN_ERR_NOT_FINITE, "kiln_ds2d_step: stream %d (adapter slot %d): %s", sm,
                d->s->lora.stream_slot[(size_t)sm], kiln::Sampler::unusable_reason(lg, bad).c_str());
  return KILN_OK;
}

// Early-exit drafts: a chain of `len` tokens per stream, each the argmax of the draft
// entry's logits (first draft_layers layers, then the final norm and LM head), with the
// softmax probability of the chain so far as its estimated chance of acceptance.
void early_exit_drafts(kiln_ds2d* d, const int32_t* roots, const int32_t* streams, int32_t n,
                       int32_t len, std::vector<kiln::ds2d::Candidate>& out) {
  kiln_session* s = d->s;
  out.assign((size_t)n, {});
  std::vector<float> chain_p((size_t)n, 1.0f);
  std::vector<uint8_t> stopped((size_t)n, 0);  // logits not usable: the chain ends there
  for (int32_t step = 0; step < len; ++step) {
    for (int32_t i = 0; i < n; ++i) {
      const auto& chain = out[(size_t)i].tokens;
      s->tokens[(size_t)i] = chain.empty() ? roots[i] : chain.back();
      s->positions[(size_t)i] = s->pos[(size_t)streams[i]] + step;
      s->streams[(size_t)i] = streams[i];
      s->adapter_slots[(size_t)i] = s->lora.stream_slot[(size_t)(streams[i])];
      s->logit_rows[(size_t)i] = i;
    }
    const double secs = d->run(d->draft, n, n);
    d->stats.draft_seconds += secs;
    ++d->stats.early_exit_drafts;
    d->draft_ratio[(size_t)n] = ewma(d->draft_ratio[(size_t)n], secs / d->plain(n), d->p.ewma);
    for (int32_t i = 0; i < n; ++i) {
      auto lg = d->row_logits(i);
      if (int64_t bad; stopped[(size_t)i] || !kiln::Sampler::usable(lg, &bad)) {
        stopped[(size_t)i] = 1;  // a draft only proposes: the verify pass reports the problem
        continue;
      }
      const int32_t best = kiln::Sampler::argmax(lg);
      double z = 0;
      for (float v : lg) z += std::exp((double)(v - lg[(size_t)best]));
      chain_p[(size_t)i] *= (float)(1.0 / z);
      out[(size_t)i].tokens.push_back(best);
      out[(size_t)i].prob.push_back(chain_p[(size_t)i]);
    }
  }
}

}  // namespace

extern "C" {

kiln_ds2d_params kiln_ds2d_default_params(void) {
  kiln_ds2d_params p;
  p.ngram_min = 1;
  p.ngram_max = 4;
  p.max_candidates = 6;
  p.early_exit = 1;
  p.early_exit_len = 3;
  p.template_index = -1;
  p.ewma = 0.1f;
  p.recycle = 0;
  p.corpus_replies = 0;
  return p;
}

kiln_status kiln_ds2d_init(kiln_session* s, const kiln_ds2d_params* params, kiln_ds2d** out) {
  return guarded("kiln_ds2d_init", [&]() -> kiln_status {
    if (!out) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: out is NULL");
    *out = nullptr;
    if (kiln_status e = usable_session("kiln_ds2d_init", s); e != KILN_OK) return e;
    kiln_ds2d_params p = params ? *params : kiln_ds2d_default_params();
    if (p.ngram_min < 1 || p.ngram_max < p.ngram_min || p.ngram_max > kMaxNgram)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: n-gram lengths %d..%d, expected "
                  "1 <= ngram_min <= ngram_max <= %d", p.ngram_min, p.ngram_max, kMaxNgram);
    if (p.max_candidates < 1 || p.max_candidates > 64)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: max_candidates %d, expected 1..64",
                  p.max_candidates);
    if (p.early_exit_len < 1 || p.early_exit_len > 16)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: early_exit_len %d, expected 1..16",
                  p.early_exit_len);
    if (!(p.ewma > 0.0f && p.ewma <= 1.0f))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: ewma %g, expected (0, 1]",
                  (double)p.ewma);
    const kiln_compiled_model* c = s->code;
    auto d = std::make_unique<kiln_ds2d>();
    d->s = s;
    d->p = p;
    const size_t max_n = (size_t)std::min(c->max_streams, c->max_rows);
#if KILN_ABI_VERSION >= 4
    if (c->n_tree_templates < 0 || (c->n_tree_templates > 0 && !c->tree_templates))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: compiled model '%s': the tree "
                  "template table is missing", s->model->name.c_str());
    for (int64_t t = 0; t < c->n_tree_templates && t < KILN_DS2D_MAX_TEMPLATES; ++t) {
      const kiln_tree_template& tt = c->tree_templates[t];
      const char* bad = nullptr;
      if (tt.n_nodes < 1 || !tt.parent || !tt.depth || !tt.verify) bad = "is incomplete";
      for (int32_t j = 0; !bad && j < tt.n_nodes; ++j)
        if (j == 0 ? tt.parent[0] != -1 || tt.depth[0] != 0
                   : tt.parent[j] < 0 || tt.parent[j] >= j || tt.depth[j] != tt.depth[tt.parent[j]] + 1)
          bad = "has a parent or depth array that is not a tree in node order";
      if (bad)
        return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: compiled model '%s': tree template "
                    "%lld %s", s->model->name.c_str(), (long long)t, bad);
      Template tm;
      tm.shape = kiln::ds2d::Shape::from_parents(std::span<const int32_t>(tt.parent, (size_t)tt.n_nodes));
      tm.verify = tt.verify;
      for (int32_t dep : tm.shape.depth) tm.max_depth = std::max(tm.max_depth, dep);
      tm.adjust.assign(max_n + 1, 0.0);
      d->max_step_tokens = std::max(d->max_step_tokens, tm.max_depth + 1);
      d->templates.push_back(std::move(tm));
    }
    if (c->draft && c->draft_layers > 0 && p.early_exit) d->draft = c->draft;
#endif
    if (p.template_index < -1)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: template_index %d, expected -1 (chosen each step) "
                  "or a template's index", p.template_index);
    if (p.template_index >= (int32_t)d->templates.size())
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_init: template_index %d, the compiled "
                  "model '%s' has %zu tree templates", p.template_index, s->model->name.c_str(),
                  d->templates.size());
    d->plain_cost.assign(max_n + 1, 0.0);
    d->draft_ratio.assign(max_n + 1, 0.0);
    d->rates.assign(kNumSources, Rate{});
    d->rates[0] = Rate{0.4, 0.5};  // early exit: a guess until it has run
    d->rates[kRecycleSource] = Rate{0.3, 0.5};  // recycling: likewise
    d->clear_corpus();
    if (p.recycle) d->recycle.reset(s->model->n_vocab);
    for (int64_t k = 0; k < c->max_streams; ++k) d->streams.emplace_back(p.ngram_min, p.ngram_max);
    d->logits.assign((size_t)c->max_rows * (size_t)s->model->n_vocab, 0.0f);
    d->zeros.assign((size_t)s->model->n_vocab, 0.0f);
    d->seen.assign((size_t)c->max_streams, 0);
    calibrate(d.get());
    *out = d.release();
    return KILN_OK;
  });
}

void kiln_ds2d_free(kiln_ds2d* d) { delete d; }

int32_t kiln_ds2d_max_step_tokens(const kiln_ds2d* d) { return d ? d->max_step_tokens : 0; }

kiln_status kiln_ds2d_begin(kiln_ds2d* d, int32_t stream, const int32_t* tokens, int32_t n) {
  return guarded("kiln_ds2d_begin", [&]() -> kiln_status {
    if (!d) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_begin: ds2d is NULL");
    if (stream < 0 || stream >= (int32_t)d->streams.size())
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_begin: stream %d is out of range [0, %zu)",
                  stream, d->streams.size());
    if (n < 0) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_begin: n is %d, expected >= 0", n);
    if (n > 0 && !tokens) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_begin: tokens is NULL (n %d)", n);
    // The drafter proposes tokens from this history and the verify pass embeds them, so a
    // token the model does not have is refused here, as kiln_prefill refuses it.
    for (int32_t k = 0; k < n; ++k)
      if (!d->s->model->has_token(tokens[k]))
        return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_begin: tokens[%d] = %d is outside the vocabulary [0, %d)",
                    k, tokens[k], d->s->model->n_vocab);
    StreamState& st = d->streams[(size_t)stream];
    // The text the stream held joins the corpus, unless the new one goes on from it (the
    // next turn of a chat), where the stream's own lookup still has it.
    const std::vector<int32_t>& held = st.ngram.text();
    const bool continued = held.size() <= (size_t)n && std::equal(held.begin(), held.end(), tokens);
    if (d->p.corpus_replies && !held.empty() && !continued && !st.held_before_clear &&
        d->corpus_tokens + (int64_t)held.size() <= KILN_DS2D_MAX_CORPUS_TOKENS)
      d->add_corpus(held);
    if (!continued) st.held_before_clear = false;
    st.ngram.reset();
    st.ngram.append(std::span<const int32_t>(tokens, (size_t)n));
    return KILN_OK;
  });
}

kiln_status kiln_ds2d_step(kiln_ds2d* d, const int32_t* roots, const int32_t* streams, int32_t n,
                           kiln_sampler* const* samplers, int32_t* out, int32_t out_stride,
                           int32_t* out_n) {
  return guarded("kiln_ds2d_step", [&]() -> kiln_status {
    if (!d) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: ds2d is NULL");
    if (!roots || !streams || !out || !out_n)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: roots, streams, out or out_n is NULL");
    kiln_session* s = d->s;
    if (kiln_status e = usable_session("kiln_ds2d_step", s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    const int32_t V = s->model->n_vocab;
    const int32_t max_n = (int32_t)std::min(c->max_streams, c->max_rows);
    if (n < 1 || n > max_n)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: n is %d, expected 1..%d", n, max_n);
    if (out_stride < d->max_step_tokens)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: out_stride %d is below "
                  "kiln_ds2d_max_step_tokens (%d)", out_stride, d->max_step_tokens);
    kiln_status st = KILN_OK;
    int32_t i = 0;
    for (; i < n && st == KILN_OK; ++i) {
      const int32_t sm = streams[i];
      if (sm < 0 || sm >= c->max_streams)
        st = fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: streams[%d] = %d is out of range "
                  "[0, %lld)", i, sm, (long long)c->max_streams);
      else if (d->seen[(size_t)sm])
        st = fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: streams[%d] = %d is listed twice", i, sm);
      else if (!s->model->has_token(roots[i]))
        st = fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_step: roots[%d] = %d is not a token id "
                  "(n_vocab %d)", i, roots[i], V);
      else if (s->pos[(size_t)sm] >= c->max_context)
        st = fail(KILN_ERR_CONTEXT_FULL, "kiln_ds2d_step: stream %d is full (max_context %lld)", sm,
                  (long long)c->max_context);
      else
        d->seen[(size_t)sm] = 1;
    }
    for (int32_t j = 0; j < i; ++j)
      if (streams[j] >= 0 && streams[j] < c->max_streams) d->seen[(size_t)streams[j]] = 0;
    if (st != KILN_OK) return st;
    const kiln_ds2d_stats stats_before = d->stats;  // a failed step does not count
    ++d->stats.steps;
    double mean_pos = 0;  // where the streams are: verify costs grow with it
    for (int32_t k = 0; k < n; ++k) mean_pos += (double)s->pos[(size_t)streams[k]] / n;
    d->last_pos = mean_pos;
    auto sampler_of = [&](int32_t k) -> kiln::Sampler* {
      return samplers && samplers[k] ? &samplers[k]->sampler : nullptr;
    };

    // 1. Draft: n-gram continuations of each stream's text, root included. A draft's
    // tokens get the chance of being accepted that its source's recent accuracy gives.
    const auto t_draft = Clock::now();
    int32_t deepest = 0;
    for (auto& t : d->templates) deepest = std::max(deepest, t.max_depth);
    std::vector<kiln::ds2d::DraftTree> trees;
    std::vector<std::vector<kiln::ds2d::Candidate>> tops((size_t)n);  // learnt on below
    trees.reserve((size_t)n);
    auto add = [&](int32_t k, kiln::ds2d::Candidate& cand) {
      const Rate& r = d->rates[(size_t)cand.source];
      double pr = cand.weight * r.first;
      for (float& x : cand.prob) { x = (float)pr; pr *= r.next; }
      trees[(size_t)k].add(cand);
      if (cand.top) tops[(size_t)k].push_back(cand);
    };
    // A step that fails (logits a stream takes a token from hold NaN or +inf) leaves every
    // stream as it was: its drafter's text too, which gets the root here.
    std::vector<size_t> text_before((size_t)n);
    auto fail_step = [&](kiln_status e) {
      for (int32_t k = 0; k < n; ++k) d->streams[(size_t)streams[k]].ngram.truncate(text_before[(size_t)k]);
      d->stats = stats_before;
      return e;
    };
    for (int32_t k = 0; k < n; ++k) {
      StreamState& ss = d->streams[(size_t)streams[k]];
      text_before[(size_t)k] = ss.ngram.text().size();
      ss.ngram.append(roots[k]);
      trees.emplace_back(roots[k]);
      if (deepest == 0) continue;
      for (auto& cand : ss.ngram.draft(deepest, d->p.max_candidates)) add(k, cand);
      if (d->corpus_tokens > 0)
        for (auto& cand : d->corpus.draft_for(ss.ngram.text(), deepest, d->p.max_candidates)) {
          cand.source += kCorpusSource;
          add(k, cand);
        }
      if (d->p.recycle)
        for (auto& cand : d->recycle.draft(roots[k], deepest, d->p.max_candidates, kRecycleSource)) add(k, cand);
    }
    d->stats.draft_seconds += std::chrono::duration<double>(Clock::now() - t_draft).count();

    // 2. Choose: the tokens per second each template is expected to give (1 + the
    // expected accepted drafts per stream, over the measured cost of its verify entry)
    // against plain decoding.
    struct Choice {
      int32_t t = -1;
      double value = 0;
      std::vector<kiln::ds2d::Filled> fills;
    };
    auto choose = [&](double extra_cost, const Rate* ee, int32_t ee_len) {
      Choice best;
      // A verify pass must beat plain decoding by a margin: the estimates are noisy, and
      // a pass that only breaks even on paper loses in practice.
      best.value = 1.1 * n / d->plain(n);
      for (int32_t t = 0; t < (int32_t)d->templates.size(); ++t) {
        const Template& tm = d->templates[(size_t)t];
        if ((int64_t)n * tm.shape.n_nodes > c->max_rows) continue;
        if (d->p.template_index >= 0 && t != d->p.template_index) continue;
        bool fits = true;
        for (int32_t k = 0; k < n; ++k)
          fits = fits && s->pos[(size_t)streams[k]] + tm.shape.n_nodes <= c->max_context;
        if (!fits) continue;
        std::vector<kiln::ds2d::Filled> fills;
        double expect = 0;
        double chain = 0;  // what an early-exit chain would add along the template's chain
        if (ee) {
          double pr = ee->first;
          for (int32_t i = 0; i < std::min(ee_len, tm.max_depth); ++i) { chain += pr; pr *= ee->next; }
        }
        for (int32_t k = 0; k < n; ++k) {
          fills.push_back(kiln::ds2d::fill(trees[(size_t)k], tm.shape));
          expect += 1.0 + std::max<double>(fills.back().expected, chain);
        }
        const double value = expect / (d->cost(tm, n, mean_pos) + extra_cost);
        if (d->p.template_index >= 0 || value > best.value) {
          best.value = value;
          best.t = t;
          best.fills = std::move(fills);
        }
      }
      return best;
    };
    for (auto& t : trees) t.sort();
    Choice pick = choose(0.0, nullptr, 0);

    // 3. Early exit, when the compiled model has it, there is room, and its recent
    // accuracy says a chain of its drafts would pay for the passes that draft it (now and
    // then regardless, to keep that accuracy current).
    std::vector<kiln::ds2d::Candidate> ee;
    const int32_t ee_len = d->p.early_exit_len;
    bool room = true;
    for (int32_t k = 0; k < n; ++k) room = room && s->pos[(size_t)streams[k]] + ee_len <= c->max_context;
    if (d->draft && !d->templates.empty() && room) {
      const double dcost = d->draft_cost(n) * ee_len;
      const Choice with = choose(dcost, &d->rates[0], ee_len);
      if (with.t >= 0 && (with.value > pick.value || d->stats.steps % 64 == 1 || d->p.template_index >= 0)) {
        early_exit_drafts(d, roots, streams, n, ee_len, ee);
        for (int32_t k = 0; k < n; ++k) {
          ee[(size_t)k].source = 0;
          add(k, ee[(size_t)k]);
        }
        for (auto& t : trees) t.sort();
        pick = choose(0.0, nullptr, 0);  // the drafts are paid for now
      }
    }
    const int32_t best = pick.t;
    std::vector<kiln::ds2d::Filled>& best_fill = pick.fills;

    // Learn each source's accuracy from what was decoded: `truth` continues the root.
    auto learn = [&](int32_t k, std::span<const int32_t> truth) {
      const double w = d->p.ewma;
      for (const auto& cand : tops[(size_t)k]) {
        Rate& r = d->rates[(size_t)cand.source];
        if (truth.empty() || cand.tokens.empty()) continue;
        const bool ok = cand.tokens[0] == truth[0];
        r.first = (1 - w) * r.first + w * (ok ? 1.0 : 0.0);
        for (size_t i = 1; ok && i < truth.size() && i < cand.tokens.size(); ++i) {
          const bool hit = cand.tokens[i] == truth[i];
          r.next = (1 - w) * r.next + w * (hit ? 1.0 : 0.0);
          if (!hit) break;
        }
      }
    };

    if (best < 0) {
      // 4a. Plain decode.
      for (int32_t k = 0; k < n; ++k) {
        s->tokens[(size_t)k] = roots[k];
        s->positions[(size_t)k] = s->pos[(size_t)streams[k]];
        s->streams[(size_t)k] = streams[k];
        s->adapter_slots[(size_t)k] = s->lora.stream_slot[(size_t)(streams[k])];
        s->logit_rows[(size_t)k] = k;
      }
      const double secs = d->run(s->step_entry(n), n, n);
      d->plain_cost[(size_t)n] = ewma(d->plain_cost[(size_t)n], secs, d->p.ewma);
      d->stats.plain_seconds += secs;
      ++d->stats.plain_steps;
      for (int32_t k = 0; k < n; ++k)  // every row is a stream's next token
        if (kiln_status e = check_logits(d, k, streams[k]); e != KILN_OK) return fail_step(e);
      for (int32_t k = 0; k < n; ++k) {
        ++s->pos[(size_t)streams[k]];
        kiln::Sampler* sp = sampler_of(k);
        auto lg = d->row_logits(k);
        if (d->p.recycle) d->recycle.observe(roots[k], lg);
        out[(size_t)k * (size_t)out_stride] = sp ? sp->sample(lg) : kiln::Sampler::argmax(lg);
        out_n[k] = 1;
        learn(k, std::span<const int32_t>(out + (size_t)k * (size_t)out_stride, 1));
        ++d->stats.tokens;
      }
      return KILN_OK;
    }

    // 4b. Verify: block k of rows is stream k's tree; logits for the nodes holding a draft
    // (and the root).
    Template& tm = d->templates[(size_t)best];
    const int32_t nn = tm.shape.n_nodes;
    std::vector<int64_t> logit_row((size_t)n * (size_t)nn, -1);
    int64_t n_logits = 0;
    for (int32_t k = 0; k < n; ++k) {
      const int32_t base = s->pos[(size_t)streams[k]];
      const auto& f = best_fill[(size_t)k];
      for (int32_t j = 0; j < nn; ++j) {
        const size_t r = (size_t)k * (size_t)nn + (size_t)j;
        s->tokens[r] = f.tokens[(size_t)j];
        s->positions[r] = base + tm.shape.depth[(size_t)j];
        s->streams[r] = streams[k];
        s->adapter_slots[(size_t)r] = s->lora.stream_slot[(size_t)(streams[k])];
        if (f.valid[(size_t)j]) {
          s->logit_rows[(size_t)n_logits] = (int32_t)r;
          logit_row[r] = n_logits++;
        }
      }
    }
    const double secs = d->run(tm.verify, (int64_t)n * nn, n_logits);
    // From the calibrated model (adjust 1) on: one slow pass (a page fault, the machine
    // busy) moves the estimate by the EWMA weight only, not to a value that would keep
    // the template from ever being picked, and so re-measured, again.
    tm.adjust[(size_t)n] = ewma(kiln_ds2d::adjust_of(tm, n), secs / d->plain(n) / d->model_ratio(tm, mean_pos), d->p.ewma);
    d->stats.verify_seconds += secs;
    ++d->stats.verify_passes;
    if (best < KILN_DS2D_MAX_TEMPLATES) ++d->stats.template_uses[best];

    // 5. Accept, every stream first: the rows acceptance reads are the ones kiln_decode
    // would have computed, and one of them holding NaN or +inf fails the step before any
    // stream changes (acceptance reads zeros in its place meanwhile). A bad row on a branch
    // not taken does not matter. Then compact, stream by stream.
    std::vector<kiln::ds2d::Accepted> accepted((size_t)n);
    for (int32_t k = 0; k < n; ++k) {
      int64_t bad_row = -1;
      auto node_logits = [&](int32_t j) -> std::span<const float> {
        const int64_t r = logit_row[(size_t)k * (size_t)nn + (size_t)j];
        int64_t bad;
        if (bad_row < 0 && !kiln::Sampler::usable(d->row_logits(r), &bad)) bad_row = r;
        return r == bad_row ? std::span<const float>(d->zeros) : d->row_logits(r);
      };
      kiln::Sampler* sp = sampler_of(k);
      accepted[(size_t)k] = sp && !sp->greedy() ? kiln::ds2d::accept_sampled(tm.shape, best_fill[(size_t)k], *sp, node_logits)
                                                : kiln::ds2d::accept_greedy(tm.shape, best_fill[(size_t)k], node_logits);
      if (bad_row >= 0) return fail_step(check_logits(d, bad_row, streams[k]));
    }
    uint8_t* kv = s->kv.data();
    const std::span<const kiln_kv_block> blocks(c->kv_blocks, (size_t)c->n_kv_blocks);
    for (int32_t k = 0; k < n; ++k) {
      const int32_t sm = streams[k];
      const int32_t base = s->pos[(size_t)sm];
      const auto& f = best_fill[(size_t)k];
      auto node_logits = [&](int32_t j) { return d->row_logits(logit_row[(size_t)k * (size_t)nn + (size_t)j]); };
      const kiln::ds2d::Accepted& a = accepted[(size_t)k];
      kiln::ds2d::compact_kv(kv + (uint64_t)sm * c->kv_stream_bytes, blocks, base, a.path);
      if (d->p.recycle)  // every row with logits: what the model expects after its token
        for (int32_t j = 0; j < nn; ++j)
          if (f.valid[(size_t)j]) d->recycle.observe(f.tokens[(size_t)j], node_logits(j));
      s->pos[(size_t)sm] = base + (int32_t)a.path.size();
      const int32_t acc = (int32_t)a.path.size() - 1;
      int32_t* o = out + (size_t)k * (size_t)out_stride;
      StreamState& ss = d->streams[(size_t)sm];
      for (int32_t m = 1; m <= acc; ++m) {
        o[m - 1] = f.tokens[(size_t)a.path[(size_t)m]];
        ss.ngram.append(o[m - 1]);
      }
      o[acc] = a.bonus;
      out_n[k] = acc + 1;
      learn(k, std::span<const int32_t>(o, (size_t)acc + 1));
      int32_t drafted = 0;
      for (int32_t j = 1; j < nn; ++j) drafted += f.valid[(size_t)j];
      d->stats.drafted += drafted;
      d->stats.accepted += acc;
      d->stats.tokens += acc + 1;
      ++d->stats.stream_passes;
    }
    return KILN_OK;
  });
}

kiln_status kiln_ds2d_get_stats(const kiln_ds2d* d, kiln_ds2d_stats* out) {
  return guarded("kiln_ds2d_get_stats", [&]() -> kiln_status {
    if (!d || !out) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_get_stats: ds2d or out is NULL");
    *out = d->stats;
    out->n_templates = (int32_t)std::min<size_t>(d->templates.size(), KILN_DS2D_MAX_TEMPLATES);
    for (int32_t t = 0; t < out->n_templates; ++t) {
      out->template_nodes[t] = d->templates[(size_t)t].shape.n_nodes;
      out->template_seconds[t] = d->cost(d->templates[(size_t)t], 1, d->last_pos);
    }
    out->plain_step_seconds = d->plain(1);
    out->corpus_tokens = d->corpus_tokens;
    return KILN_OK;
  });
}

kiln_status kiln_ds2d_add_corpus(kiln_ds2d* d, const int32_t* tokens, int32_t n) {
  return guarded("kiln_ds2d_add_corpus", [&]() -> kiln_status {
    if (!d) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_add_corpus: ds2d is NULL");
    if (n < 0) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_add_corpus: n is %d, expected >= 0", n);
    if (n > 0 && !tokens) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_add_corpus: tokens is NULL (n %d)", n);
    for (int32_t k = 0; k < n; ++k)  // drafts from the corpus are embedded by verify passes
      if (!d->s->model->has_token(tokens[k]))
        return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_add_corpus: tokens[%d] = %d is outside the vocabulary "
                    "[0, %d)", k, tokens[k], d->s->model->n_vocab);
    if (d->corpus_tokens + n > KILN_DS2D_MAX_CORPUS_TOKENS)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_add_corpus: the corpus holds %lld tokens; %d more would pass "
                  "the limit of %d (KILN_DS2D_MAX_CORPUS_TOKENS)", (long long)d->corpus_tokens, n,
                  KILN_DS2D_MAX_CORPUS_TOKENS);
    if (n > 0) d->add_corpus(std::span<const int32_t>(tokens, (size_t)n));
    return KILN_OK;
  });
}

kiln_status kiln_ds2d_clear_corpus(kiln_ds2d* d) {
  return guarded("kiln_ds2d_clear_corpus", [&]() -> kiln_status {
    if (!d) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_ds2d_clear_corpus: ds2d is NULL");
    d->clear_corpus();
    for (StreamState& st : d->streams) st.held_before_clear = !st.ngram.text().empty();
    return KILN_OK;
  });
}

}  // extern "C"
