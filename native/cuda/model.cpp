#include "model.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>

#include "../common/check.h"
#include "../common/rope.h"
#include "ops.h"
#include "sampling.h"

namespace jg::cuda {

namespace {

// Weight transfers go through this much pinned host memory at a time.
constexpr int64_t kChunkBytes = 16 << 20;

void read_exact(int fd, void* dst, int64_t bytes, int64_t offset, const std::string& path, const std::string& name) {
  char* p = static_cast<char*>(dst);
  int64_t got = 0;
  while (got < bytes) {
    ssize_t r = ::pread(fd, p + got, bytes - got, offset + got);
    if (r < 0 && errno == EINTR) continue;
    JG_CHECK_AS(ErrorKind::CHECKPOINT, r > 0, "Cannot read tensor ", name, " from ", path, ": ",
             r == 0 ? "unexpected end of file" : std::strerror(errno));
    got += r;
  }
}

}  // namespace

int device_count(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = str_cat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device is visible";
  return n;
}

Model::Model(const ModelConfig& cfg, int device, DType dtype, bool master_weights)
    : cfg_(cfg), layout_(cfg), device_(device), dtype_(dtype), esize_(act_size(dtype)) {
  std::string why;
  const int n = device_count(&why);
  JG_CHECK_AS(ErrorKind::UNSUPPORTED, n > 0, "No CUDA device: ", why);
  JG_CHECK(device >= 0 && device < n, "CUDA device ", device, " does not exist (this machine has ", n, ")");
  DeviceScope scope(device_);
  JG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    blas_ = std::make_unique<Blas>(stream_);
    weights_.reserve(static_cast<size_t>(layout_.total()) * esize_, "model parameters");
    JG_CUDA_CHECK(cudaMemsetAsync(weights_.get(), 0, static_cast<size_t>(layout_.total()) * esize_, stream_));
    if (master_weights && dtype_ != DType::F32) {
      master_.reserve(static_cast<size_t>(layout_.total()) * sizeof(float), "fp32 master weights");
      JG_CUDA_CHECK(cudaMemsetAsync(master_.get(), 0, static_cast<size_t>(layout_.total()) * sizeof(float), stream_));
      master_ready_ = true;
    }
    // The RoPE table is the CPU backend's, computed in float64 on the host and rounded once.
    const int64_t half = cfg.head_dim() / 2;
    std::vector<float> table(2 * cfg.max_seq_len * half);
    rope_table(table.data(), table.data() + cfg.max_seq_len * half, cfg.max_seq_len, cfg.head_dim(), cfg.rope_theta);
    rope_.reserve(table.size() * sizeof(float), "the RoPE table");
    JG_CUDA_CHECK(cudaMemcpyAsync(rope_.get(), table.data(), table.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
    JG_CUDA_CHECK(cudaMallocHost(&pinned_, kChunkBytes));
    JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (...) {
    release();
    throw;
  }
}

Model::~Model() { release(); }

void Model::release() {
  if (stream_ == nullptr && pinned_ == nullptr) return;
  // Never throws (it runs in the destructor): errors while freeing are ignored.
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  blas_.reset();
  for (DeviceBuffer* b : {&weights_, &master_, &rope_, &x_, &xn_, &qkv_, &att_, &gu_, &act_, &sel_, &seln_, &ints_, &logits_,
                          &staging_, &targets_, &d_excluded_, &d_keys_, &d_early_, &d_row_begin_, &d_sched_,
                          &d_samples_, &d_commit_, &d_k_})
    b->release();
  master_ready_ = false;
  if (pinned_) cudaFreeHost(pinned_);
  pinned_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  cudaSetDevice(previous);
}

int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

DeviceInfo Model::device_info() const {
  cudaDeviceProp prop;
  JG_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  return {"cuda", prop.name, dtype_ == DType::F32 ? "F32" : "BF16", device_, double(prop.totalGlobalMem),
          str_cat(prop.major, ".", prop.minor)};
}

int64_t Model::count_non_finite(const ParamInfo& p) {
  std::vector<float> host(p.numel);
  get_param(host.data(), p);
  int64_t n = 0;
  for (float x : host) n += !std::isfinite(x);
  return n;
}

void Model::write_tensor(TensorWriter& w, const ParamInfo& p, DType dtype) {
  std::vector<float> host(p.numel);
  get_param(host.data(), p);
  w.write_tensor(host.data(), p.numel, dtype);
}

void* Model::param(int64_t offset) const {
  JG_CHECK_AS(ErrorKind::DISPOSED, weights_.get() != nullptr, "Model is disposed");
  return static_cast<char*>(weights_.get()) + offset * esize_;
}

void Model::synchronize() {
  DeviceScope scope(device_);
  JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::load_tensor(const ParamInfo& p, DType file_dtype, const std::string& path, int64_t offset) {
  DeviceScope scope(device_);
  char* dst = static_cast<char*>(param(p.offset));
  const int fsize = dtype_size(file_dtype);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  JG_CHECK_AS(ErrorKind::CHECKPOINT, fd >= 0, "Cannot open ", path, ": ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const bool same = file_dtype == dtype_;
  // Converting chunks go through fp32 on the host and the device: at most kChunkBytes of fp32.
  const int64_t chunk = kChunkBytes / 4;
  std::vector<float> f32;
  std::vector<uint16_t> half;
  float* dev_f32 = same ? nullptr : staging_.reserve_as<float>(chunk, "weight staging");
  for (int64_t done = 0; done < p.numel;) {
    const int64_t n = std::min(p.numel - done, chunk);
    if (same) {
      read_exact(fd, pinned_, n * fsize, offset + done * fsize, path, p.name);
      JG_CUDA_CHECK(cudaMemcpyAsync(dst + done * esize_, pinned_, n * esize_, cudaMemcpyHostToDevice, stream_));
      if (master_ready_)  // the file's bf16 values, widened exactly
        convert_to_f32(master() + p.offset + done, dst + done * esize_, dtype_, n, stream_);
    } else {
      float* host = static_cast<float*>(pinned_);
      if (file_dtype == DType::F32) {
        read_exact(fd, host, n * 4, offset + done * 4, path, p.name);
      } else {
        half.resize(n);
        read_exact(fd, half.data(), n * 2, offset + done * 2, path, p.name);
        for (int64_t i = 0; i < n; i++) host[i] = file_dtype == DType::BF16 ? bf16_to_f32(half[i]) : f16_to_f32(half[i]);
      }
      JG_CUDA_CHECK(cudaMemcpyAsync(dev_f32, host, n * 4, cudaMemcpyHostToDevice, stream_));
      to_master(p.offset + done, dev_f32, n);
      convert_from_f32(dst + done * esize_, dtype_, dev_f32, n, stream_);
    }
    // The pinned buffer is reused by the next chunk.
    JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
    done += n;
  }
}

void Model::set_param(const ParamInfo& p, const float* src) {
  DeviceScope scope(device_);
  char* dst = static_cast<char*>(param(p.offset));
  const int64_t chunk = kChunkBytes / 4;
  float* dev_f32 = staging_.reserve_as<float>(chunk, "weight staging");
  for (int64_t done = 0; done < p.numel; done += chunk) {
    const int64_t n = std::min(p.numel - done, chunk);
    std::memcpy(pinned_, src + done, n * 4);
    JG_CUDA_CHECK(cudaMemcpyAsync(dev_f32, pinned_, n * 4, cudaMemcpyHostToDevice, stream_));
    to_master(p.offset + done, dev_f32, n);
    convert_from_f32(dst + done * esize_, dtype_, dev_f32, n, stream_);
    JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
}

// The master copy's values where there is one (what training updates and checkpoints keep), else
// the weights widened.
void Model::get_param(float* dst, const ParamInfo& p) {
  DeviceScope scope(device_);
  const char* src = static_cast<const char*>(param(p.offset));
  const int64_t chunk = kChunkBytes / 4;
  float* dev_f32 = master_ready_ ? nullptr : staging_.reserve_as<float>(chunk, "weight staging");
  for (int64_t done = 0; done < p.numel; done += chunk) {
    const int64_t n = std::min(p.numel - done, chunk);
    const float* from = master_ready_ ? master() + p.offset + done : dev_f32;
    if (!master_ready_) convert_to_f32(dev_f32, src + done * esize_, dtype_, n, stream_);
    JG_CUDA_CHECK(cudaMemcpyAsync(pinned_, from, n * 4, cudaMemcpyDeviceToHost, stream_));
    JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(dst + done, pinned_, n * 4);
  }
}

void Model::init_random(uint64_t seed, float stdev) {
  DeviceScope scope(device_);
  const auto& params = layout_.params();
  for (size_t i = 0; i < params.size(); i++) {
    const bool norm = params[i].shape.size() == 1;
    init_normal(param(params[i].offset), dtype_, params[i].numel, seed, i, norm ? 0.0f : stdev, 1.0f, stream_);
  }
  // The drawn bf16 values are the weights; the masters start from them exactly.
  if (master_ready_) convert_to_f32(master(), param(0), dtype_, layout_.total(), stream_);
  JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

float* Model::master() {
  if (dtype_ == DType::F32) return static_cast<float*>(param(0));
  if (!master_ready_) {
    DeviceScope scope(device_);
    master_.reserve(static_cast<size_t>(layout_.total()) * sizeof(float), "fp32 master weights");
    convert_to_f32(static_cast<float*>(master_.get()), param(0), dtype_, layout_.total(), stream_);
    JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
    master_ready_ = true;
  }
  return static_cast<float*>(master_.get());
}

void Model::to_master(int64_t offset, const float* dev_f32, int64_t n) {
  if (!master_ready_) return;
  JG_CUDA_CHECK(cudaMemcpyAsync(master() + offset, dev_f32, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
}

float* Model::logits_scratch(int64_t n) { return logits_.reserve_as<float>(n, "logits"); }

// One host-to-device copy of the batch's integers: tokens (N), seq_starts (S+1), positions (N), rows (R).
void Model::upload_batch(const Batch& batch, const int32_t* rows, int64_t n_rows) {
  const int64_t N = batch.n_tokens(), S = batch.n_seqs;
  std::vector<int32_t> ints(2 * N + S + 1 + n_rows);
  std::copy(batch.tokens, batch.tokens + N, ints.begin());
  std::copy(batch.seq_starts, batch.seq_starts + S + 1, ints.begin() + N);
  max_len_ = 0;
  for (int64_t s = 0; s < S; s++) {
    const int32_t a = batch.seq_starts[s], b = batch.seq_starts[s + 1];
    max_len_ = std::max<int64_t>(max_len_, b - a);
    for (int32_t i = a; i < b; i++) ints[N + S + 1 + i] = i - a;
  }
  std::copy(rows, rows + n_rows, ints.begin() + 2 * N + S + 1);
  int32_t* d = ints_.reserve_as<int32_t>(ints.size(), "batch indices");
  JG_CUDA_CHECK(cudaMemcpyAsync(d, ints.data(), ints.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  // The host vector goes out of scope: wait for the copy (it is small).
  JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::project(void* out, int64_t ldo, const void* inp, int64_t N, int64_t C, std::initializer_list<Part> parts) {
  bool contiguous = true;
  int64_t total = 0;
  const Part* prev = nullptr;
  for (const Part& p : parts) {
    if (prev && p.offset != prev->offset + prev->rows * C) contiguous = false;
    total += p.rows;
    prev = &p;
  }
  if (contiguous) {
    blas_->matmul_forward(out, dtype_, ldo, inp, param(parts.begin()->offset), dtype_, N, C, total);
    return;
  }
  int64_t col = 0;
  for (const Part& p : parts) {
    blas_->matmul_forward(static_cast<char*>(out) + col * esize_, dtype_, ldo, inp, param(p.offset), dtype_, N, C, p.rows);
    col += p.rows;
  }
}

void Model::run_layers(const Batch& batch) {
  const int64_t N = batch.n_tokens(), S = batch.n_seqs;
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t kv = cfg_.kv_dim(), mlp = cfg_.mlp_hidden, qkd = d + 2 * kv;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  const int32_t* d_ints = static_cast<const int32_t*>(ints_.get());
  const int32_t* d_tokens = d_ints;
  const int32_t* d_starts = d_ints + N;
  const int32_t* d_pos = d_ints + N + S + 1;
  const float* cos_t = static_cast<const float*>(rope_.get());
  const float* sin_t = cos_t + cfg_.max_seq_len * (hd / 2);

  float* x = x_.reserve_as<float>(N * d, "activations");
  char* xn = static_cast<char*>(xn_.reserve(N * d * esize_, "activations"));
  char* qkv = static_cast<char*>(qkv_.reserve(N * qkd * esize_, "activations"));
  char* att = static_cast<char*>(att_.reserve(N * d * esize_, "activations"));
  char* gu = static_cast<char*>(gu_.reserve(N * 2 * mlp * esize_, "activations"));
  char* act = static_cast<char*>(act_.reserve(N * mlp * esize_, "activations"));

  embedding_forward(x, d_tokens, param(layout_.wte), dtype_, N, d, stream_);
  for (const LayerParams& L : layout_.layers) {
    // x += attn_out(attention(rope(q), rope(k), v)), q|k|v from one projection of attn_norm(x).
    rmsnorm_forward(xn, x, param(L.attn_norm), dtype_, N, d, eps, stream_);
    project(qkv, qkd, xn, N, d, {{L.q_proj, d}, {L.k_proj, kv}, {L.v_proj, kv}});
    rope_forward(qkv, dtype_, qkd, d_pos, cos_t, sin_t, N, H, hd, stream_);
    rope_forward(qkv + d * esize_, dtype_, qkd, d_pos, cos_t, sin_t, N, KV, hd, stream_);
    attention_forward(att, d, qkv, qkd, qkv + d * esize_, qkv + (d + kv) * esize_, qkd, dtype_, d_starts, S, max_len_,
                      H, KV, hd, stream_);
    // The residual add is the GEMM's beta = 1 into the fp32 stream.
    blas_->matmul_forward(x, DType::F32, d, att, param(L.attn_out), dtype_, N, d, d, 1.0f);
    // x += ff_out(silu(ff_proj(h)) * up_proj(h)), h = ff_norm(x); gate|up from one projection.
    rmsnorm_forward(xn, x, param(L.ff_norm), dtype_, N, d, eps, stream_);
    project(gu, 2 * mlp, xn, N, d, {{L.ff_proj, mlp}, {L.up_proj, mlp}});
    swiglu_forward(act, gu, gu + mlp * esize_, 2 * mlp, dtype_, N, mlp, stream_);
    blas_->matmul_forward(x, DType::F32, d, act, param(L.ff_out), dtype_, N, mlp, d, 1.0f);
  }
}

void Model::head(float* d_logits, const int32_t* d_rows, int64_t R) {
  const int64_t d = cfg_.d_model, V = cfg_.embedding_size;
  float* sel = sel_.reserve_as<float>(R * d, "activations");
  void* seln = seln_.reserve(R * d * esize_, "activations");
  gather_rows(sel, static_cast<const float*>(x_.get()), d_rows, R, d, stream_);
  rmsnorm_forward(seln, sel, param(layout_.ln_f), dtype_, R, d, static_cast<float>(cfg_.rms_norm_eps), stream_);
  blas_->matmul_forward(d_logits, DType::F32, V, seln, param(layout_.lm_head), dtype_, R, d, V);
}

Batch Model::distinct(const Batch& in, const int32_t*& rows, int64_t n_rows) {
  const int64_t N = in.n_tokens();
  for (int64_t r = 0; r < n_rows; r++)
    JG_CHECK(rows[r] >= 0 && rows[r] < N, "Row ", rows[r], " is outside the batch of ", N, " tokens");
  if (!share_duplicates(shared_, in, rows, n_rows)) return in;
  rows = shared_.rows.data();
  return shared_.batch();
}

void Model::forward_device(float* d_logits, const Batch& in_batch, const int32_t* rows, int64_t n_rows) {
  DeviceScope scope(device_);
  JG_CHECK_AS(ErrorKind::DISPOSED, weights_.get() != nullptr, "Model is disposed");
  const Batch batch = distinct(in_batch, rows, n_rows);
  const int64_t N = batch.n_tokens();
  tokens_computed_ += N;
  upload_batch(batch, rows, n_rows);
  run_layers(batch);
  const int32_t* d_rows = static_cast<const int32_t*>(ints_.get()) + 2 * N + batch.n_seqs + 1;
  head(d_logits, d_rows, n_rows);
}

void Model::forward(float* logits, const Batch& batch, const int32_t* rows, int64_t n_rows) {
  DeviceScope scope(device_);
  const int64_t V = cfg_.embedding_size;
  float* d_logits = logits_scratch(n_rows * V);
  forward_device(d_logits, batch, rows, n_rows);
  JG_CUDA_CHECK(cudaMemcpyAsync(logits, d_logits, n_rows * V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::logprobs(float* out, const Batch& in_batch, const int32_t* rows, const int32_t* targets, int64_t n_rows,
                     const std::vector<int32_t>& excluded) {
  DeviceScope scope(device_);
  JG_CHECK_AS(ErrorKind::DISPOSED, weights_.get() != nullptr, "Model is disposed");
  const Batch batch = distinct(in_batch, rows, n_rows);
  const int64_t N = batch.n_tokens(), V = cfg_.embedding_size;
  tokens_computed_ += N;
  upload_batch(batch, rows, n_rows);
  run_layers(batch);
  const int32_t* d_rows = static_cast<const int32_t*>(ints_.get()) + 2 * N + batch.n_seqs + 1;
  // targets (R), then the excluded ids, then the results (as floats), in one scratch buffer.
  const int64_t n_ex = static_cast<int64_t>(excluded.size());
  int32_t* d_t = targets_.reserve_as<int32_t>(2 * n_rows + n_ex, "log-prob targets");
  JG_CUDA_CHECK(cudaMemcpyAsync(d_t, targets, n_rows * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  if (n_ex > 0)
    JG_CUDA_CHECK(cudaMemcpyAsync(d_t + n_rows, excluded.data(), n_ex * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  float* d_out = reinterpret_cast<float*>(d_t + n_rows + n_ex);
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n_rows, kHeadChunkFloats / V));
  float* d_logits = logits_scratch(chunk * V);
  for (int64_t r0 = 0; r0 < n_rows; r0 += chunk) {
    const int64_t rc = std::min(chunk, n_rows - r0);
    head(d_logits, d_rows + r0, rc);
    logprob_rows(d_out + r0, d_logits, d_t + r0, rc, V, d_t + n_rows, static_cast<int>(n_ex), stream_);
  }
  JG_CUDA_CHECK(cudaMemcpyAsync(out, d_out, n_rows * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  JG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace jg::cuda
