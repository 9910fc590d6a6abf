#include "sampling.h"

#include <cmath>
#include <limits>
#include <vector>

namespace jg::cpu {

namespace {

// Log-partition and entropy of softmax(logits * inv_t) over the allowed ids, in float64.
struct Moments {
  double log_z, entropy;
};

Moments moments(const float* l, int64_t V, const std::vector<char>& allowed, double inv_t, double max_l) {
  double z = 0, zl = 0;
  for (int64_t v = 0; v < V; v++) {
    if (!allowed[v]) continue;
    double x = (static_cast<double>(l[v]) - max_l) * inv_t;
    double e = std::exp(x);
    z += e;
    zl += e * x;
  }
  // H = log Z - E[x]; both relative to the max, which cancels.
  return {std::log(z) + max_l * inv_t, std::log(z) - zl / z};
}

}  // namespace

void sample_row(RowSample* out, const float* l, int64_t V, const int32_t* excluded, int64_t n_excluded,
                double temperature, uint64_t key) {
  std::vector<char> allowed(V, 1);
  for (int64_t i = 0; i < n_excluded; i++)
    if (excluded[i] >= 0 && excluded[i] < V) allowed[excluded[i]] = 0;

  // Top two by logit (ties: the lower id), and the max for stable exponentials.
  int64_t top1 = -1, top2 = -1;
  for (int64_t v = 0; v < V; v++) {
    if (!allowed[v]) continue;
    if (top1 < 0 || l[v] > l[top1]) {
      top2 = top1;
      top1 = v;
    } else if (top2 < 0 || l[v] > l[top2]) {
      top2 = v;
    }
  }
  const double max_l = l[top1];
  const Moments m1 = moments(l, V, allowed, 1.0, max_l);

  int64_t token = top1;
  double entropy = m1.entropy;
  if (temperature > 0) {
    // argmax_v l_v / T + g_v with g_v = -log(-log u_v): a draw from softmax(l / T).
    const double inv_t = 1.0 / temperature;
    double best = -std::numeric_limits<double>::infinity();
    for (int64_t v = 0; v < V; v++) {
      if (!allowed[v]) continue;
      double g = -std::log(-std::log(uniform_open(key, static_cast<uint64_t>(v))));
      double s = static_cast<double>(l[v]) * inv_t + g;
      if (s > best) {
        best = s;
        token = v;
      }
    }
    if (temperature != 1.0) entropy = moments(l, V, allowed, inv_t, max_l).entropy;
  }
  const double lp = static_cast<double>(l[token]) - m1.log_z;
  const double p1 = std::exp(static_cast<double>(l[top1]) - m1.log_z);
  const double p2 = top2 < 0 ? 0.0 : std::exp(static_cast<double>(l[top2]) - m1.log_z);
  out->token = static_cast<int32_t>(token);
  out->logprob = static_cast<float>(lp);
  out->entropy = static_cast<float>(entropy);
  out->prob = std::exp(lp);
  out->margin = p1 - p2;
  out->certainty = std::exp(-m1.entropy);
}

}  // namespace jg::cpu
