// runtime/model_file.cpp — the model.kiln reader: header checks, checksum, verifier,
// contents checks, then read-only views into the mapping.
//
// Checks run cheapest first and each names the file: a short or foreign file fails on the
// header, a damaged one on the checksum, and only a file whose bytes are what its writer
// wrote reaches the flatbuffers verifier (which still runs, so that a buggy or hostile
// writer cannot make the views read out of bounds).
#include "runtime/model_file.h"

#include <bit>
#include <cstring>

#include "model_generated.h"
#include "runtime/hash64.h"

namespace kiln {

static_assert(std::endian::native == std::endian::little,
              "model.kiln headers are read in place; add byte swaps for big-endian hosts");

namespace {

std::string_view view(const flatbuffers::String* s) {
  return s ? std::string_view(s->data(), s->size()) : std::string_view();
}

Error fail(ModelFileErrc* errc, ModelFileErrc kind, Error e) {
  if (errc) *errc = kind;
  return e;
}

}  // namespace

Result<ModelFile> ModelFile::open(const std::string& path, ModelFileErrc* errc) {
  auto f = MappedFile::open(path);
  if (!f.ok()) return fail(errc, ModelFileErrc::kIo, f.take_error());
  return parse(std::move(f).value(), errc);
}

Result<ModelFile> ModelFile::parse(MappedFile file, ModelFileErrc* errc) {
  const std::string& path = file.path();
  const uint8_t* data = file.data();
  const size_t size = file.size();
  auto format = [&](Error e) { return fail(errc, ModelFileErrc::kFormat, std::move(e)); };

  if (size < kModelFileHeaderSize)
    return format(make_error("{}: {} bytes is shorter than the {}-byte model.kiln header "
                             "(truncated?)", path, size, kModelFileHeaderSize));
  ModelFileHeader h;
  std::memcpy(&h, data, sizeof h);
  if (std::memcmp(h.magic, kModelFileMagic, sizeof h.magic) != 0)
    return format(make_error("{}: not a model.kiln file (no \"KILNMODL\" magic)", path));
  if (h.format_version != kModelFileVersion)
    return fail(errc, ModelFileErrc::kVersion,
                make_error("{}: format version {}, this runtime reads {}", path, h.format_version,
                           kModelFileVersion));
  if (h.header_size != kModelFileHeaderSize)
    return format(make_error("{}: header size {}, expected {}", path, h.header_size,
                             kModelFileHeaderSize));
  for (uint8_t b : h.reserved)
    if (b != 0) return format(make_error("{}: reserved header bytes are not zero", path));
  const uint64_t body = size - kModelFileHeaderSize;
  if (h.flatbuffer_size > body)
    return format(make_error("{}: truncated: the header promises {} bytes of data, the file has {}",
                             path, h.flatbuffer_size, body));
  if (h.flatbuffer_size < body)
    return format(make_error("{}: {} unexpected bytes after the data", path,
                             body - h.flatbuffer_size));
  if (body > kModelFileMaxFlatbuffer)
    return format(make_error("{}: {} bytes of data exceed the format's 2 GiB limit", path, body));
  const uint8_t* fbuf = data + kModelFileHeaderSize;
  const uint64_t sum = xxh64(fbuf, body);
  if (sum != h.checksum)
    return fail(errc, ModelFileErrc::kChecksum,
                make_error("{}: checksum mismatch (header 0x{:016x}, data 0x{:016x}): the file "
                           "is corrupt", path, h.checksum, sum));
  if (reinterpret_cast<uintptr_t>(fbuf) % 8 != 0)
    return format(make_error("{}: mapped at an address that is not 8-byte aligned", path));
  flatbuffers::Verifier verifier(fbuf, body);
  if (!fb::VerifyModelBuffer(verifier))
    return format(make_error("{}: the data fails flatbuffer verification (schema "
                             "runtime/schema/model.fbs)", path));

  const fb::Model* m = fb::GetModel(fbuf);
  if (m->format_version() != h.format_version)
    return format(make_error("{}: the data says format version {}, the header {}", path,
                             m->format_version(), h.format_version));
  if (!m->hparams()) return format(make_error("{}: no hyperparameters", path));
  if (!m->limits()) return format(make_error("{}: no compiled limits", path));
  if (!m->tokenizer()) return format(make_error("{}: no tokenizer", path));
  const uint64_t nweights = m->weights() ? m->weights()->size() : 0;
  if (nweights > 0 && reinterpret_cast<uintptr_t>(m->weights()->data()) % kModelWeightsAlign != 0)
    return format(make_error("{}: the weight blob is not {}-byte aligned (offset {} in the file)",
                             path, kModelWeightsAlign,
                             m->weights()->data() - data));
  if (const auto* ts = m->tensors()) {
    for (flatbuffers::uoffset_t i = 0; i < ts->size(); ++i) {
      const fb::TensorRecord* t = ts->Get(i);
      if (t->offset() > nweights || t->nbytes() > nweights - t->offset())
        return format(make_error("{}: tensor '{}' at offset {} with {} bytes lies outside the "
                                 "{}-byte weight blob", path, view(t->name()), t->offset(),
                                 t->nbytes(), nweights));
      // The flatbuffer verifier of Debian's flatbuffers checks a vector's length field for
      // 4-byte alignment, not its 8-byte elements; the writer aligns them, so a misaligned
      // shape is corruption (and reading it would be a misaligned load: fuzz finding).
      if (t->shape() && reinterpret_cast<uintptr_t>(t->shape()->data()) % alignof(int64_t) != 0)
        return format(make_error("{}: tensor '{}': its shape is not {}-byte aligned", path,
                                 view(t->name()), alignof(int64_t)));
    }
  }
  ModelFile out;
  out.file_ = std::move(file);
  out.root_ = m;
  out.header_ = h;
  if (errc) *errc = ModelFileErrc::kNone;
  return out;
}

uint32_t ModelFile::format_version() const { return root_->format_version(); }
uint64_t ModelFile::model_hash() const { return root_->model_hash(); }
std::string_view ModelFile::name() const { return view(root_->name()); }
std::string_view ModelFile::arch() const { return view(root_->arch()); }
std::string_view ModelFile::profile() const { return view(root_->profile()); }
std::string_view ModelFile::target() const { return view(root_->target()); }

ModelHparams ModelFile::hparams() const {
  const fb::Hyperparameters* h = root_->hparams();
  ModelHparams o;
  o.n_vocab = h->n_vocab();
  o.n_embd = h->n_embd();
  o.n_layer = h->n_layer();
  o.n_head = h->n_head();
  o.n_head_kv = h->n_head_kv();
  o.head_dim = h->head_dim();
  o.n_ff = h->n_ff();
  o.n_ctx_train = h->n_ctx_train();
  o.rope_theta = h->rope_theta();
  o.rms_eps = h->rms_eps();
  return o;
}

ModelLimits ModelFile::limits() const {
  const fb::Limits* l = root_->limits();
  return {l->max_rows(), l->max_streams(), l->max_context()};
}

VocabData ModelFile::vocab() const {
  const fb::Tokenizer* t = root_->tokenizer();
  VocabData v;
  v.model = view(t->model());
  v.pre = view(t->pre());
  auto strings = [](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* list,
                    std::vector<std::string>& out) {
    if (!list) return;
    out.reserve(list->size());
    for (flatbuffers::uoffset_t i = 0; i < list->size(); ++i) out.emplace_back(view(list->Get(i)));
  };
  strings(t->tokens(), v.tokens);
  strings(t->merges(), v.merges);
  if (t->scores()) v.scores.assign(t->scores()->begin(), t->scores()->end());
  if (t->token_types()) v.token_types.assign(t->token_types()->begin(), t->token_types()->end());
  v.bos = t->bos();
  v.eos = t->eos();
  v.unk = t->unk();
  v.pad = t->pad();
  v.eot = t->eot();
  v.eom = t->eom();
  v.add_bos = t->add_bos();
  v.add_eos = t->add_eos();
  v.add_space_prefix = t->add_space_prefix();
  return v;
}

std::string_view ModelFile::chat_template() const {
  return view(root_->tokenizer()->chat_template());
}

size_t ModelFile::n_tensors() const { return root_->tensors() ? root_->tensors()->size() : 0; }

TensorRecord ModelFile::tensor(size_t i) const {
  TensorRecord r;
  if (i >= n_tensors()) return r;
  const fb::TensorRecord* t = root_->tensors()->Get(static_cast<flatbuffers::uoffset_t>(i));
  r.name = view(t->name());
  r.dtype = t->dtype();
  if (t->shape()) r.shape.assign(t->shape()->begin(), t->shape()->end());
  r.offset = t->offset();
  r.nbytes = t->nbytes();
  r.layout = view(t->layout());
  return r;
}

std::vector<TensorRecord> ModelFile::tensors() const {
  std::vector<TensorRecord> out;
  out.reserve(n_tensors());
  for (size_t i = 0; i < n_tensors(); ++i) out.push_back(tensor(i));
  return out;
}

std::span<const uint8_t> ModelFile::weights() const {
  const auto* w = root_->weights();
  if (!w || w->size() == 0) return {};
  return {w->data(), w->size()};
}

}  // namespace kiln
