// Row-wise top-m selection of a float32 CPU matrix by radix select (methods/top_m.py builds it).
//
// Per row: map each float to an order-preserving uint32 key, histogram the keys' top 11 bits and
// find the bin that holds the m-th largest key; a second pass emits every column above that bin
// and collects the bin's own entries, of which nth_element picks the rest. Two linear passes over
// the row instead of torch.topk's nth_element over (value, index) pairs of the whole row.
// Output columns are in ascending order; among equal keys at the cut the lower columns win.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace {

constexpr int kBits = 11;
constexpr int kBins = 1 << kBits;
constexpr int kShift = 32 - kBits;

// Larger float -> larger key; -0.0 and +0.0 share a key; every NaN sorts above +inf (as in
// torch.topk).
inline uint32_t order_key(float x) {
  x += 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t key = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (bits & 0x7FFFFFFFu) > 0x7F800000u ? 0xFFFFFFFFu : key;
}

struct Entry {
  uint32_t key;
  int64_t column;
};

// Writes the row's m largest columns in ascending order to out_index and their values to out_value.
void select_row(const float* row, int64_t n, int64_t m, std::vector<uint32_t>& hist,
                std::vector<Entry>& boundary, std::vector<int64_t>& picked, int64_t* out_index,
                float* out_value) {
  // Four interleaved histograms: runs of equal bins would otherwise chain every increment on
  // the one before it (store-to-load latency), and similarities fall in few exponent bins.
  std::fill(hist.begin(), hist.end(), 0);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    ++hist[order_key(row[j]) >> kShift];
    ++hist[kBins + (order_key(row[j + 1]) >> kShift)];
    ++hist[2 * kBins + (order_key(row[j + 2]) >> kShift)];
    ++hist[3 * kBins + (order_key(row[j + 3]) >> kShift)];
  }
  for (; j < n; ++j) ++hist[order_key(row[j]) >> kShift];
  for (int i = 0; i < kBins; ++i) hist[i] += hist[kBins + i] + hist[2 * kBins + i] + hist[3 * kBins + i];
  int64_t above = 0;
  uint32_t bin = kBins - 1;
  while (above + hist[bin] < m) above += hist[bin--];
  const int64_t need = m - above;  // taken from the boundary bin, 1 <= need <= hist[bin]

  // One branch-free pass: columns above the bin go straight to the output (ascending; the slot
  // after the last one, at most m - 1, takes the throw-away writes), the bin's own to `boundary`.
  boundary.resize(hist[bin] + 1);
  int64_t taken = 0, held = 0;
  for (j = 0; j < n; ++j) {
    const uint32_t key = order_key(row[j]);
    const uint32_t key_bin = key >> kShift;
    out_index[taken] = j;
    taken += key_bin > bin;
    boundary[held] = {key, j};
    held += key_bin == bin;
  }
  // The bin's `need` largest keys, ties to the lower column, then in column order.
  const auto larger = [](const Entry& a, const Entry& b) {
    return a.key > b.key || (a.key == b.key && a.column < b.column);
  };
  std::nth_element(boundary.begin(), boundary.begin() + (need - 1), boundary.begin() + held, larger);
  picked.resize(need);
  for (int64_t i = 0; i < need; ++i) picked[i] = boundary[i].column;
  std::sort(picked.begin(), picked.end());
  // Merge the two ascending lists from the back, in place.
  int64_t a = above - 1, b = need - 1;
  for (int64_t out = m - 1; b >= 0; --out)
    out_index[out] = (a >= 0 && out_index[a] > picked[b]) ? out_index[a--] : picked[b--];
  for (int64_t i = 0; i < m; ++i) out_value[i] = row[out_index[i]];
}

}  // namespace

// (values, indices), each (B, m): the m largest entries of every row of ``scores`` (B, n).
std::vector<torch::Tensor> top_m(const torch::Tensor& scores, int64_t m) {
  TORCH_CHECK(scores.dim() == 2, "top_m: scores must be 2-D, got ", scores.dim(), "-D");
  TORCH_CHECK(scores.scalar_type() == torch::kFloat, "top_m: scores must be float32");
  TORCH_CHECK(scores.device().is_cpu(), "top_m: scores must be on the CPU");
  TORCH_CHECK(m >= 1 && m <= scores.size(1), "top_m: m must be in [1, ", scores.size(1), "], got ", m);
  const torch::Tensor rows = scores.contiguous();
  const int64_t count = rows.size(0), n = rows.size(1);
  torch::Tensor indices = torch::empty({count, m}, torch::kLong);
  torch::Tensor values = torch::empty({count, m}, torch::kFloat);
  const float* source = rows.data_ptr<float>();
  int64_t* index_out = indices.data_ptr<int64_t>();
  float* value_out = values.data_ptr<float>();
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> hist(4 * kBins);
    std::vector<Entry> boundary;
    std::vector<int64_t> picked;
    for (int64_t r = begin; r < end; ++r)
      select_row(source + r * n, n, m, hist, boundary, picked, index_out + r * m, value_out + r * m);
  });
  return {values, indices};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("top_m", &top_m, "Row-wise top-m of a float32 CPU matrix (values, ascending indices)");
}
