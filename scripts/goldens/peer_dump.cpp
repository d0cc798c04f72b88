// peer_dump.cpp - dump golden reference data from llama.cpp, kiln's peer implementation.
//
// A small program of our own that calls llama.cpp's public C API (llama.h) only. It is
// built and run by scripts/make_goldens.sh; kiln's tests read the files it writes under
// tests/goldens/ and never rebuild it. See tests/goldens/README.md for the file formats.
//
//   peer_dump tokenize MODEL CASES OUT
//       For each case: llama_tokenize(add_special=false, parse_special=<case flag>), then
//       llama_detokenize(remove_special=false, unparse_special=true) of the ids. Writes
//       one line per case: "<flag>\t<hex input>\t<ids>\t<hex detokenized>".
//   peer_dump logits [--threads N] [--top K] [--gen N] [--gtop K] MODEL PROMPTS OUT
//       For each prompt: one llama_decode of the whole prompt with logits requested for
//       every position, the top-K logits per position, then greedy (argmax) decoding of
//       N tokens, one token per llama_decode, not stopping at end-of-generation tokens.
//
// Input files (CASES and PROMPTS) hold one case per line: "<0|1>\t<escaped text>", where
// the flag says whether special-token texts are parsed. Blank lines and lines starting
// with '#' are skipped. Escapes: \n \r \t \\ \xNN (one byte) \u{X...} (one code point,
// written as UTF-8). Literal trailing spaces or tabs are rejected (editors eat them):
// write them as \x20 or \t.

#include "llama.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Case {
  bool parse_special = false;
  std::string text;
  int line = 0;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "peer_dump: %s\n", msg.c_str());
  std::exit(1);
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string unescape(std::string_view s, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) die(where + ": dangling backslash");
    switch (s[i]) {
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case '\\': out += '\\'; break;
      case 'x': {
        int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) die(where + ": bad \\x escape");
        out += char(hi * 16 + lo);
        i += 2;
        break;
      }
      case 'u': {
        size_t close = s.find('}', i);
        if (i + 1 >= s.size() || s[i + 1] != '{' || close == std::string_view::npos || close == i + 2)
          die(where + ": bad \\u{...} escape");
        uint32_t cp = 0;
        for (size_t j = i + 2; j < close; ++j) {
          int v = hex_value(s[j]);
          if (v < 0 || cp > 0x10FFFF) die(where + ": bad \\u{...} escape");
          cp = cp * 16 + uint32_t(v);
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) die(where + ": \\u{...} is not a scalar value");
        append_utf8(out, cp);
        i = close;
        break;
      }
      default: die(where + ": unknown escape \\" + std::string(1, s[i]));
    }
  }
  return out;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t j = 1; j < n; ++j) {
      unsigned char d = s[i + j];
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

std::vector<Case> read_cases(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die(std::string("cannot open ") + path);
  std::vector<Case> cases;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::string where = std::string(path) + ":" + std::to_string(lineno);
    if (!line.empty() && line.back() == '\r') die(where + ": CR line ending (write \\r instead)");
    if (line.empty() || line[0] == '#') continue;
    if (line.size() < 2 || (line[0] != '0' && line[0] != '1') || line[1] != '\t')
      die(where + ": expected \"<0|1><TAB><escaped text>\"");
    if (line.size() > 2 && (line.back() == ' ' || line.back() == '\t'))
      die(where + ": literal trailing whitespace (write \\x20 or \\t)");
    std::string text = unescape(std::string_view(line).substr(2), where);
    if (!valid_utf8(text)) die(where + ": text is not valid UTF-8");
    cases.push_back({line[0] == '1', std::move(text), lineno});
  }
  return cases;
}

std::string hex(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::vector<llama_token> tokenize(const llama_vocab* vocab, const std::string& text, bool parse_special) {
  std::vector<llama_token> ids(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.data(), int32_t(text.size()), ids.data(), int32_t(ids.size()),
                             /*add_special=*/false, parse_special);
  if (n < 0) {
    ids.resize(size_t(-n));
    n = llama_tokenize(vocab, text.data(), int32_t(text.size()), ids.data(), int32_t(ids.size()),
                       /*add_special=*/false, parse_special);
  }
  if (n < 0) die("llama_tokenize failed");
  ids.resize(size_t(n));
  return ids;
}

std::string detokenize(const llama_vocab* vocab, const std::vector<llama_token>& ids) {
  std::string out(ids.size() * 16 + 16, '\0');
  int32_t n = llama_detokenize(vocab, ids.data(), int32_t(ids.size()), out.data(), int32_t(out.size()),
                               /*remove_special=*/false, /*unparse_special=*/true);
  if (n < 0) {
    out.resize(size_t(-n));
    n = llama_detokenize(vocab, ids.data(), int32_t(ids.size()), out.data(), int32_t(out.size()),
                         /*remove_special=*/false, /*unparse_special=*/true);
  }
  if (n < 0) die("llama_detokenize failed");
  out.resize(size_t(n));
  return out;
}

// One-line display form: the escapes of the input files, plus \" for quotes.
std::string escape(std::string_view s) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c < 0x20 || c == 0x7f) out += std::string("\\x") + digits[c >> 4] + digits[c & 15];
    else out += char(c);
  }
  return out;
}

std::string join_ids(const std::vector<llama_token>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  return out;
}

FILE* open_out(const char* path) {
  FILE* f = std::fopen(path, "wb");
  if (!f) die(std::string("cannot write ") + path + ": " + std::strerror(errno));
  return f;
}

void close_out(FILE* f, const char* path) {
  if (std::ferror(f) || std::fclose(f) != 0) die(std::string("error writing ") + path);
}

llama_model* load_model(const char* path, bool vocab_only) {
  llama_model_params mp = llama_model_default_params();
  mp.vocab_only = vocab_only;
  mp.n_gpu_layers = 0;
  mp.use_extra_bufts = false;  // plain ggml-cpu kernels, no weight repacking
  llama_model* model = llama_model_load_from_file(path, mp);
  if (!model) die(std::string("cannot load model ") + path);
  return model;
}

int cmd_tokenize(const char* model_path, const char* cases_path, const char* out_path) {
  std::vector<Case> cases = read_cases(cases_path);
  llama_model* model = load_model(model_path, /*vocab_only=*/true);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  FILE* out = open_out(out_path);
  for (const Case& c : cases) {
    std::vector<llama_token> ids = tokenize(vocab, c.text, c.parse_special);
    std::fprintf(out, "%d\t%s\t%s\t%s\n", c.parse_special ? 1 : 0, hex(c.text).c_str(), join_ids(ids).c_str(),
                 hex(detokenize(vocab, ids)).c_str());
  }
  close_out(out, out_path);
  std::fprintf(stderr, "peer_dump: %zu tokenizer cases -> %s\n", cases.size(), out_path);
  llama_model_free(model);
  return 0;
}

// Ids of the k largest logits, by logit descending, ties by id ascending.
std::vector<int32_t> top_k(const float* logits, int32_t n_vocab, int k) {
  std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
  std::iota(ids.begin(), ids.end(), 0);
  auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  k = std::min(k, n_vocab);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), before);
  ids.resize(size_t(k));
  return ids;
}

void print_top(FILE* out, const char* tag, int index, const float* logits, int32_t n_vocab, int k) {
  std::fprintf(out, "%s %d", tag, index);
  for (int32_t id : top_k(logits, n_vocab, k)) std::fprintf(out, " %d:%.6g", id, double(logits[id]));
  std::fputc('\n', out);
}

struct LogitsOptions {
  int threads = 1;
  int top = 32;
  int gen = 32;
  int gtop = 8;
};

void decode_or_die(llama_context* ctx, llama_batch& batch) {
  int32_t rc = llama_decode(ctx, batch);
  if (rc != 0) die("llama_decode failed with " + std::to_string(rc));
}

int cmd_logits(const LogitsOptions& opt, const char* model_path, const char* prompts_path, const char* out_path) {
  std::vector<Case> prompts = read_cases(prompts_path);
  llama_model* model = load_model(model_path, /*vocab_only=*/false);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  FILE* out = open_out(out_path);

  for (size_t p = 0; p < prompts.size(); ++p) {
    const Case& c = prompts[p];
    std::vector<llama_token> ids = tokenize(vocab, c.text, c.parse_special);
    if (ids.empty()) die("prompt " + std::to_string(p) + " tokenizes to nothing");
    const int32_t n_prompt = int32_t(ids.size());

    // A fresh context per prompt, so prompts cannot influence each other.
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = uint32_t(((n_prompt + opt.gen + 255) / 256) * 256);
    cp.n_batch = cp.n_ctx;  // the whole prompt in one llama_decode / one ubatch
    cp.n_ubatch = cp.n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = opt.threads;
    cp.n_threads_batch = opt.threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = GGML_TYPE_F32;  // keep the KV cache in float, not the default F16
    cp.type_v = GGML_TYPE_F32;
    cp.no_perf = true;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) die("llama_init_from_model failed");

    std::fprintf(out, "prompt %zu %s %d\n", p, hex(c.text).c_str(), c.parse_special ? 1 : 0);
    std::fprintf(out, "tokens %s\n", join_ids(ids).c_str());

    llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    batch.n_tokens = n_prompt;
    for (int32_t i = 0; i < n_prompt; ++i) {
      batch.token[i] = ids[size_t(i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;  // logits for every position
    }
    decode_or_die(ctx, batch);
    for (int32_t i = 0; i < n_prompt; ++i) {
      const float* logits = llama_get_logits_ith(ctx, i);
      if (!logits) die("no logits for prompt position " + std::to_string(i));
      print_top(out, "top", i, logits, n_vocab, opt.top);
    }
    llama_batch_free(batch);

    // Greedy continuation: step s picks the argmax of the logits after the prompt and the
    // first s greedy tokens (ties -> lowest id), and does not stop at EOS/EOG.
    std::vector<llama_token> greedy;
    std::vector<std::vector<float>> step_logits;
    const float* logits = llama_get_logits_ith(ctx, n_prompt - 1);
    llama_batch one = llama_batch_init(1, 0, 1);
    for (int s = 0; s < opt.gen; ++s) {
      step_logits.emplace_back(logits, logits + n_vocab);
      llama_token next = top_k(logits, n_vocab, 1)[0];
      greedy.push_back(next);
      if (s + 1 == opt.gen) break;
      one.n_tokens = 1;
      one.token[0] = next;
      one.pos[0] = n_prompt + s;
      one.n_seq_id[0] = 1;
      one.seq_id[0][0] = 0;
      one.logits[0] = 1;
      decode_or_die(ctx, one);
      logits = llama_get_logits_ith(ctx, 0);
      if (!logits) die("no logits for greedy step " + std::to_string(s + 1));
    }
    llama_batch_free(one);

    std::fprintf(out, "greedy %s\n", join_ids(greedy).c_str());
    for (size_t s = 0; s < step_logits.size(); ++s)
      print_top(out, "gtop", int(s), step_logits[s].data(), n_vocab, opt.gtop);
    std::fprintf(out, "end\n");
    std::fprintf(stderr, "peer_dump: prompt %zu: %d tokens, greedy: \"%s\"\n", p, n_prompt,
                 escape(detokenize(vocab, greedy)).c_str());
    llama_free(ctx);
  }
  close_out(out, out_path);
  llama_model_free(model);
  return 0;
}

int parse_int(const char* s, const char* flag) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (!*s || *end || v <= 0 || v > 1000000) die(std::string("bad value for ") + flag + ": " + s);
  return int(v);
}

[[noreturn]] void usage() {
  std::fputs("usage: peer_dump tokenize MODEL CASES OUT\n"
             "       peer_dump logits [--threads N] [--top K] [--gen N] [--gtop K] MODEL PROMPTS OUT\n",
             stderr);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  std::string cmd = argv[1];
  int rc = 0;
  if (cmd == "tokenize") {
    if (argc != 5) usage();
    rc = cmd_tokenize(argv[2], argv[3], argv[4]);
  } else if (cmd == "logits") {
    LogitsOptions opt;
    int i = 2;
    for (; i + 1 < argc && std::strncmp(argv[i], "--", 2) == 0; i += 2) {
      std::string flag = argv[i];
      if (flag == "--threads") opt.threads = parse_int(argv[i + 1], argv[i]);
      else if (flag == "--top") opt.top = parse_int(argv[i + 1], argv[i]);
      else if (flag == "--gen") opt.gen = parse_int(argv[i + 1], argv[i]);
      else if (flag == "--gtop") opt.gtop = parse_int(argv[i + 1], argv[i]);
      else usage();
    }
    if (argc - i != 3) usage();
    rc = cmd_logits(opt, argv[i], argv[i + 1], argv[i + 2]);
  } else {
    usage();
  }
  llama_backend_free();
  return rc;
}
