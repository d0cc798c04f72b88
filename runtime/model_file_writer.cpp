// runtime/model_file_writer.cpp — builds the model.kiln flatbuffer and its header.
//
// The builder is filled in one fixed order (weights, tensors, tokenizer, strings, root) and
// FlatBufferBuilder pads with zeros, so equal contents give equal bytes. The weight vector
// is built with ForceVectorAlignment(64): its first byte lies at a multiple of 64 from the
// end of the buffer, and Finish() pads the front to the largest alignment used (64), so it
// is also 64-aligned from the start of the flatbuffer, which starts at file offset 64.
#include "runtime/model_file_writer.h"

#include <cstring>

#include "model_generated.h"
#include "runtime/hash64.h"
#include "support/file.h"

namespace kiln {
namespace {

Status check_contents(const ModelFileContents& c) {
  const VocabData& v = c.vocab;
  if (!v.scores.empty() && v.scores.size() != v.tokens.size())
    return make_error("model.kiln writer: {} tokenizer scores for {} tokens", v.scores.size(),
                      v.tokens.size());
  if (!v.token_types.empty() && v.token_types.size() != v.tokens.size())
    return make_error("model.kiln writer: {} token types for {} tokens", v.token_types.size(),
                      v.tokens.size());
  for (const TensorRecord& t : c.tensors) {
    if (t.offset > c.weights.size() || t.nbytes > c.weights.size() - t.offset)
      return make_error("model.kiln writer: tensor '{}' at offset {} with {} bytes lies outside "
                        "the {}-byte weight blob", t.name, t.offset, t.nbytes, c.weights.size());
  }
  if (c.weights.size() > kModelFileMaxFlatbuffer - (64u << 20))
    return make_error("model.kiln writer: the weight blob is {} bytes; format version {} holds "
                      "at most ~2 GiB", c.weights.size(), kModelFileVersion);
  return Status::success();
}

}  // namespace

Result<std::string> model_file_bytes(const ModelFileContents& c) {
  KILN_TRY(check_contents(c));
  const VocabData& v = c.vocab;
  size_t estimate = c.weights.size() + 4096 + c.tensors.size() * 128;
  for (const auto& t : v.tokens) estimate += t.size() + 12;
  for (const auto& m : v.merges) estimate += m.size() + 12;
  estimate += v.scores.size() * 4 + v.token_types.size() * 4 + c.chat_template.size();
  flatbuffers::FlatBufferBuilder fbb(estimate);

  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> weights;
  if (!c.weights.empty()) {
    fbb.ForceVectorAlignment(c.weights.size(), 1, kModelWeightsAlign);
    weights = fbb.CreateVector(c.weights.data(), c.weights.size());
  }

  std::vector<flatbuffers::Offset<fb::TensorRecord>> tensors;
  tensors.reserve(c.tensors.size());
  for (const TensorRecord& t : c.tensors) {
    auto name = fbb.CreateString(t.name);
    auto shape = fbb.CreateVector(t.shape);
    auto layout = fbb.CreateString(t.layout);
    tensors.push_back(
        fb::CreateTensorRecord(fbb, name, t.dtype, shape, t.offset, t.nbytes, layout));
  }
  auto tensor_vec = fbb.CreateVector(tensors);

  auto strings = [&](const std::vector<std::string>& list) {
    std::vector<flatbuffers::Offset<flatbuffers::String>> offs;
    offs.reserve(list.size());
    for (const auto& s : list) offs.push_back(fbb.CreateString(s));
    return fbb.CreateVector(offs);
  };
  auto tok_model = fbb.CreateString(v.model);
  auto tok_pre = fbb.CreateString(v.pre);
  auto tok_tokens = strings(v.tokens);
  auto tok_scores = fbb.CreateVector(v.scores);
  auto tok_types = fbb.CreateVector(v.token_types);
  auto tok_merges = strings(v.merges);
  auto tok_template = fbb.CreateString(c.chat_template);
  auto tokenizer = fb::CreateTokenizer(fbb, tok_model, tok_pre, tok_tokens, tok_scores, tok_types,
                                       tok_merges, v.bos, v.eos, v.unk, v.pad, v.eot, v.eom,
                                       v.add_bos, v.add_eos, v.add_space_prefix, tok_template);

  const ModelHparams& h = c.hparams;
  auto hparams = fb::CreateHyperparameters(fbb, h.n_vocab, h.n_embd, h.n_layer, h.n_head,
                                           h.n_head_kv, h.head_dim, h.n_ff, h.n_ctx_train,
                                           h.rope_theta, h.rms_eps);
  auto limits = fb::CreateLimits(fbb, c.limits.max_rows, c.limits.max_streams,
                                 c.limits.max_context);
  auto name = fbb.CreateString(c.name);
  auto arch = fbb.CreateString(c.arch);
  auto profile = fbb.CreateString(c.profile);
  auto target = fbb.CreateString(c.target);
  auto root = fb::CreateModel(fbb, kModelFileVersion, c.model_hash, name, arch, profile, target,
                              hparams, limits, tokenizer, tensor_vec, weights);
  fb::FinishModelBuffer(fbb, root);

  const uint8_t* body = fbb.GetBufferPointer();
  const size_t n = fbb.GetSize();
  if (n > kModelFileMaxFlatbuffer)
    return make_error("model.kiln writer: {} bytes exceed the format's 2 GiB limit", n);
  ModelFileHeader hdr{};
  std::memcpy(hdr.magic, kModelFileMagic, sizeof hdr.magic);
  hdr.format_version = kModelFileVersion;
  hdr.header_size = kModelFileHeaderSize;
  hdr.flatbuffer_size = n;
  hdr.checksum = xxh64(body, n);
  std::string out(kModelFileHeaderSize + n, '\0');
  std::memcpy(out.data(), &hdr, sizeof hdr);
  std::memcpy(out.data() + kModelFileHeaderSize, body, n);
  return out;
}

Status write_model_file(const std::string& path, const ModelFileContents& c) {
  auto bytes = model_file_bytes(c);
  if (!bytes.ok()) return Error{path + ": " + bytes.error().message};
  return write_file_atomic(path, *bytes);
}

}  // namespace kiln
