// mlp_forward: the deployment story end to end. A model trained in PyTorch is
// saved with torch.save(net.state_dict()); this plain C++ program loads those
// weights with ckptguard (no Python, nothing from the file executed), runs
// the MLP's forward pass  y = W2 relu(W1 x + b1) + b2  on an input tensor
// saved by torch, and compares with the output torch computed.
//
// Usage: mlp_forward WEIGHTS INPUT EXPECTED_OUTPUT
//   e.g. mlp_forward examples/mlp.params examples/mlp_input.pt examples/mlp_output.pt
// Exit status 0 when the output is close to torch's as torch.allclose says
// (|y - want| <= 1e-5 + 1e-4 |want|): float sums in another order differ in
// the last bits.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"

namespace {

using ckptguard::Checkpoint;
using ckptguard::DType;

struct Matrix {
  std::vector<int64_t> shape;
  std::vector<float> data;  // C order
};

// Fetch copies the float32 tensor at `path` ("" for a bare tensor) out of
// the checkpoint, in C order, little-endian.
bool Fetch(const Checkpoint& ckpt, const std::string& path, Matrix& out, std::string& error) {
  std::optional<ckptguard::ValueId> at = path.empty() ? std::optional(ckpt.root()) : ckpt.Find(path);
  if (!at || ckpt.values().Get(*at).kind != ckptguard::ValueKind::kTensor) {
    error = "no tensor '" + path + "'";
    return false;
  }
  const uint32_t index = ckpt.values().Get(*at).index;
  const ckptguard::Tensor& t = ckpt.tensors()[index];
  if (t.dtype != DType::kFloat32) {
    error = "'" + path + "' is " + std::string(ckptguard::DTypeName(t.dtype)) + ", expected float32";
    return false;
  }
  ckptguard::Result<std::vector<uint8_t>> bytes = ckpt.ContiguousBytes(index);
  if (!bytes) {
    error = bytes.error().ToString();
    return false;
  }
  out.shape = t.shape;
  out.data.resize(bytes->size() / 4);
  for (size_t i = 0; i < out.data.size(); ++i) {
    const uint8_t* p = bytes->data() + 4 * i;  // little-endian float32
    const uint32_t bits = uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
    std::memcpy(&out.data[i], &bits, 4);
  }
  return true;
}

// Linear computes x W^T + b for x [n, in], W [out, in], b [out].
Matrix Linear(const Matrix& x, const Matrix& w, const Matrix& b) {
  const int64_t n = x.shape[0], in = x.shape[1], outs = w.shape[0];
  Matrix y{{n, outs}, std::vector<float>(static_cast<size_t>(n * outs))};
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t o = 0; o < outs; ++o) {
      float acc = b.data[static_cast<size_t>(o)];
      for (int64_t k = 0; k < in; ++k) {
        acc += x.data[static_cast<size_t>(r * in + k)] * w.data[static_cast<size_t>(o * in + k)];
      }
      y.data[static_cast<size_t>(r * outs + o)] = acc;
    }
  }
  return y;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "mlp_forward: %s\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return Fail("usage: mlp_forward WEIGHTS INPUT EXPECTED_OUTPUT");
  auto weights = ckptguard::LoadCheckpoint(argv[1]);
  if (!weights) return Fail(std::string(argv[1]) + ": " + weights.error().ToString());
  auto input = ckptguard::LoadCheckpoint(argv[2]);
  if (!input) return Fail(std::string(argv[2]) + ": " + input.error().ToString());
  auto expected = ckptguard::LoadCheckpoint(argv[3]);
  if (!expected) return Fail(std::string(argv[3]) + ": " + expected.error().ToString());

  Matrix w1, b1, w2, b2, x, want;
  std::string error;
  if (!Fetch(*weights, "hidden.weight", w1, error) || !Fetch(*weights, "hidden.bias", b1, error) ||
      !Fetch(*weights, "output.weight", w2, error) || !Fetch(*weights, "output.bias", b2, error) ||
      !Fetch(*input, "", x, error) || !Fetch(*expected, "", want, error)) {
    return Fail(error);
  }
  if (x.shape.size() != 2 || w1.shape.size() != 2 || x.shape[1] != w1.shape[1] || w2.shape[1] != w1.shape[0]) {
    return Fail("shapes do not fit a 2-layer MLP");
  }
  Matrix h = Linear(x, w1, b1);
  for (float& v : h.data) v = std::max(v, 0.0f);
  const Matrix y = Linear(h, w2, b2);
  if (y.shape != want.shape) return Fail("output shape differs from the expected output's");

  double worst = 0;  // largest |y - want|, and whether every element is close
  bool close = true;
  for (size_t i = 0; i < y.data.size(); ++i) {
    const double diff = std::fabs(double{y.data[i]} - double{want.data[i]});
    worst = std::max(worst, diff);
    close = close && diff <= 1e-5 + 1e-4 * std::fabs(double{want.data[i]});
  }
  std::printf("mlp_forward: %lld x %lld input -> %lld x %lld output; largest difference from torch: %.3g\n",
              static_cast<long long>(x.shape[0]), static_cast<long long>(x.shape[1]),
              static_cast<long long>(y.shape[0]), static_cast<long long>(y.shape[1]), worst);
  for (int64_t r = 0; r < y.shape[0]; ++r) {
    std::printf("  y[%lld] =", static_cast<long long>(r));
    for (int64_t c = 0; c < y.shape[1]; ++c) std::printf(" %.5f", y.data[static_cast<size_t>(r * y.shape[1] + c)]);
    std::printf("\n");
  }
  if (!close) return Fail("output differs from torch's beyond float tolerance");
  std::printf("mlp_forward: matches torch's output\n");
  return 0;
}
