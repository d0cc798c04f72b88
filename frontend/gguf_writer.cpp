// frontend/gguf_writer.cpp — see gguf_writer.h.
#include "frontend/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "support/half.h"

namespace kiln {
namespace {

template <typename T>
void put(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}

void put_str(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}

}  // namespace

void GgufWriter::add_u32(const std::string& k, uint32_t v) { std::string p; put(p, v); kv_.push_back({k, 4, p}); }
void GgufWriter::add_i32(const std::string& k, int32_t v) { std::string p; put(p, v); kv_.push_back({k, 5, p}); }
void GgufWriter::add_f32(const std::string& k, float v) { std::string p; put(p, v); kv_.push_back({k, 6, p}); }
void GgufWriter::add_bool(const std::string& k, bool v) { std::string p; put<uint8_t>(p, v); kv_.push_back({k, 7, p}); }
void GgufWriter::add_string(const std::string& k, const std::string& v) { std::string p; put_str(p, v); kv_.push_back({k, 8, p}); }

void GgufWriter::add_strings(const std::string& k, const std::vector<std::string>& v) {
  std::string p;
  put<uint32_t>(p, 8);
  put<uint64_t>(p, v.size());
  for (auto& s : v) put_str(p, s);
  kv_.push_back({k, 9, p});
}

void GgufWriter::add_f32s(const std::string& k, const std::vector<float>& v) {
  std::string p;
  put<uint32_t>(p, 6);
  put<uint64_t>(p, v.size());
  for (float f : v) put(p, f);
  kv_.push_back({k, 9, p});
}

void GgufWriter::add_i32s(const std::string& k, const std::vector<int32_t>& v) {
  std::string p;
  put<uint32_t>(p, 5);
  put<uint64_t>(p, v.size());
  for (int32_t i : v) put(p, i);
  kv_.push_back({k, 9, p});
}

void GgufWriter::add_tensor(const std::string& name, DType type, std::vector<int64_t> shape, std::string data) {
  tensors_.push_back({name, type, std::move(shape), std::move(data), 0, nullptr});
}

void GgufWriter::add_tensor_fill(const std::string& name, DType type, std::vector<int64_t> shape, uint64_t nbytes,
                                 std::function<void(uint8_t*)> fill) {
  tensors_.push_back({name, type, std::move(shape), {}, nbytes, std::move(fill)});
}

void GgufWriter::add_tensor_external(const std::string& name, DType type, std::vector<int64_t> shape) {
  TensorRec t{name, type, std::move(shape), {}, 0, {}};
  t.external = true;
  tensors_.push_back(std::move(t));
}

void GgufWriter::add_tensor_f32(const std::string& name, DType type, std::vector<int64_t> shape,
                                const std::vector<float>& values) {
  add_tensor(name, type, std::move(shape), encode_tensor_data(type, values));
}

std::string encode_tensor_data(DType type, const std::vector<float>& v) {
  std::string out;
  switch (type) {
    case DType::F32: for (float f : v) put(out, f); break;
    case DType::F16: for (float f : v) put(out, f32_to_fp16(f)); break;
    case DType::BF16:
      for (float f : v) put<uint16_t>(out, (uint16_t)(f32_to_bits(f) >> 16));  // truncation
      break;
    case DType::I32: for (float f : v) put<int32_t>(out, (int32_t)f); break;
    case DType::Q8_0:
      for (size_t b = 0; b < v.size() / 32; ++b) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[b * 32 + j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        BlockQ8_0 blk{};
        blk.d = f32_to_fp16(d);
        for (int j = 0; j < 32; ++j) blk.qs[j] = (int8_t)std::lround(v[b * 32 + j] * id);
        out.append(reinterpret_cast<const char*>(&blk), sizeof blk);
      }
      break;
    case DType::Q4_0:
      for (size_t b = 0; b < v.size() / 32; ++b) {
        float amax = 0, mx = 0;
        for (int j = 0; j < 32; ++j)
          if (std::fabs(v[b * 32 + j]) > amax) amax = std::fabs(mx = v[b * 32 + j]);
        float d = mx / -8.0f, id = d ? 1.0f / d : 0.0f;
        BlockQ4_0 blk{};
        blk.d = f32_to_fp16(d);
        for (int j = 0; j < 16; ++j) {
          int a = std::min(15, (int)(v[b * 32 + j] * id + 8.5f));
          int c = std::min(15, (int)(v[b * 32 + j + 16] * id + 8.5f));
          blk.qs[j] = (uint8_t)(a | (c << 4));
        }
        out.append(reinterpret_cast<const char*>(&blk), sizeof blk);
      }
      break;
    case DType::Q4_1:
      for (size_t b = 0; b < v.size() / 32; ++b) {
        float lo = v[b * 32], hi = v[b * 32];
        for (int j = 0; j < 32; ++j) lo = std::min(lo, v[b * 32 + j]), hi = std::max(hi, v[b * 32 + j]);
        float d = (hi - lo) / 15.0f, id = d ? 1.0f / d : 0.0f;
        BlockQ4_1 blk{};
        blk.d = f32_to_fp16(d);
        blk.m = f32_to_fp16(lo);
        for (int j = 0; j < 16; ++j) {
          int a = std::min(15, (int)((v[b * 32 + j] - lo) * id + 0.5f));
          int c = std::min(15, (int)((v[b * 32 + j + 16] - lo) * id + 0.5f));
          blk.qs[j] = (uint8_t)(a | (c << 4));
        }
        out.append(reinterpret_cast<const char*>(&blk), sizeof blk);
      }
      break;
  }
  return out;
}

std::string GgufWriter::bytes() const {
  std::string s;
  put<uint32_t>(s, 0x46554747);
  put<uint32_t>(s, 3);
  put<uint64_t>(s, tensors_.size());
  put<uint64_t>(s, kv_.size());
  for (auto& kv : kv_) {
    put_str(s, kv.key);
    put<uint32_t>(s, kv.type);
    s += kv.payload;
  }
  uint64_t offset = 0;
  for (auto& t : tensors_) {
    put_str(s, t.name);
    put<uint32_t>(s, (uint32_t)t.shape.size());
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put<uint64_t>(s, (uint64_t)*it);
    put<uint32_t>(s, dtype_info(t.type).ggml_id);
    put<uint64_t>(s, offset);
    offset += (t.size() + 31) / 32 * 32;
  }
  s.resize((s.size() + 31) / 32 * 32, '\0');
  s.reserve(s.size() + offset);  // one allocation: the data of a large model is not copied twice
  for (auto& t : tensors_) {
    if (t.external) continue;
    if (t.fill) {
      const size_t at = s.size();
      s.resize(at + t.nbytes);
      t.fill(reinterpret_cast<uint8_t*>(s.data() + at));
    } else {
      s += t.data;
    }
    s.resize((s.size() + 31) / 32 * 32, '\0');
  }
  return s;
}

}  // namespace kiln
