// Row-wise top-m selection of a float32 CPU matrix by radix select (methods/top_m.py builds it).
//
// Per row: map each float to an order-preserving uint32 key, histogram the keys' top 11 bits and
// find the bin that holds the m-th largest key; a second pass, screening blocks of columns with
// one vectorised compare, emits every column above that bin and collects the bin's own entries,
// of which nth_element picks the rest. Two linear passes over the row instead of torch.topk's
// nth_element over (value, index) pairs of the whole row.
// Output columns are in ascending order; among equal keys at the cut the lower columns win.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

constexpr int kBits = 11;
constexpr int kBins = 1 << kBits;
constexpr int kShift = 32 - kBits;
constexpr int kBlock = 16;  // columns screened per step of the second pass

// Order-preserving uint32 key of a float that is not NaN; -0.0 and +0.0 share one.
inline uint32_t number_key(float x) {
  x += 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits ^ (uint32_t(int32_t(bits) >> 31) | 0x80000000u);  // negative: ~bits; else set the sign bit
}

// The same for rows holding NaN: every NaN above +inf, as torch.topk orders them.
inline uint32_t nan_aware_key(float x) { return x != x ? 0xFFFFFFFFu : number_key(x); }

// The float whose key is ``key`` (inverse of number_key).
inline float value_of_key(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// Per-thread buffers, reused across rows.
struct Scratch {
  std::vector<uint32_t> hist = std::vector<uint32_t>(4 * kBins);
  std::vector<uint32_t> keys;        // the boundary bin's keys, in column order
  std::vector<int64_t> columns;      // and their columns
  std::vector<uint32_t> order;       // a copy of keys for nth_element
  std::vector<int64_t> picked;       // the boundary columns taken, ascending
};

// Bit i set unless block[i] < lowest (so NaN sets it), for i < kBlock.
inline uint32_t survivors(const float* block, float lowest) {
  uint32_t mask = 0;
#if defined(__SSE2__)
  const __m128 bound = _mm_set1_ps(lowest);
  for (int i = 0; i < kBlock; i += 4)
    mask |= uint32_t(_mm_movemask_ps(_mm_cmpnlt_ps(_mm_loadu_ps(block + i), bound))) << i;
#else
  for (int i = 0; i < kBlock; ++i) mask |= uint32_t(!(block[i] < lowest)) << i;
#endif
  return mask;
}

bool holds_nan(const float* row, int64_t n) {
  int64_t j = 0;
  bool nan = false;
#if defined(__SSE2__)
  __m128 unordered = _mm_setzero_ps();
  for (; j + 4 <= n; j += 4) {
    const __m128 values = _mm_loadu_ps(row + j);
    unordered = _mm_or_ps(unordered, _mm_cmpunord_ps(values, values));
  }
  nan = _mm_movemask_ps(unordered) != 0;
#endif
  for (; j < n; ++j) nan |= row[j] != row[j];
  return nan;
}

// Writes the row's m largest columns in ascending order to out_index and their values to out_value.
template <uint32_t (*Key)(float)>
void select_row(const float* row, int64_t n, int64_t m, Scratch& scratch, int64_t* out_index, float* out_value) {
  // Four interleaved histograms: runs of equal bins would otherwise chain every increment on
  // the one before it (store-to-load latency), and similarities fall in few exponent bins.
  std::vector<uint32_t>& hist = scratch.hist;
  std::fill(hist.begin(), hist.end(), 0);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    ++hist[Key(row[j]) >> kShift];
    ++hist[kBins + (Key(row[j + 1]) >> kShift)];
    ++hist[2 * kBins + (Key(row[j + 2]) >> kShift)];
    ++hist[3 * kBins + (Key(row[j + 3]) >> kShift)];
  }
  for (; j < n; ++j) ++hist[Key(row[j]) >> kShift];
  for (int i = 0; i < kBins; ++i) hist[i] += hist[kBins + i] + hist[2 * kBins + i] + hist[3 * kBins + i];
  int64_t above = 0;
  uint32_t bin = kBins - 1;
  while (above + hist[bin] < m) above += hist[bin--];
  const int64_t need = m - above;  // taken from the boundary bin, 1 <= need <= hist[bin]

  // Second pass: columns above the bin go straight to the output (ascending; the slot after the
  // last one, at most m - 1, takes the throw-away writes of the branch-free loop), the bin's own
  // entries to keys/columns. Blocks of columns are screened by one float compare against the
  // bin's lowest value (vectorised; NaN passes) and only the survivors are keyed.
  scratch.keys.resize(hist[bin] + 1);
  scratch.columns.resize(hist[bin] + 1);
  uint32_t* keys = scratch.keys.data();
  int64_t* columns = scratch.columns.data();
  const float lowest = value_of_key(bin << kShift);
  int64_t taken = 0, held = 0;
  const auto place = [&](int64_t column) {
    const uint32_t key = Key(row[column]);
    const uint32_t key_bin = key >> kShift;
    out_index[taken] = column;
    taken += key_bin > bin;
    keys[held] = key;
    columns[held] = column;
    held += key_bin == bin;
  };
  for (j = 0; j + kBlock <= n; j += kBlock)
    for (uint32_t left = survivors(row + j, lowest); left; left &= left - 1) place(j + __builtin_ctz(left));
  for (; j < n; ++j) place(j);

  // The cut: the bin's need-th largest key; take the bin's keys above it and, in column order,
  // as many equal to it as still fit (so ties go to the lower columns).
  scratch.order.assign(keys, keys + held);
  std::nth_element(scratch.order.begin(), scratch.order.begin() + (need - 1), scratch.order.end(),
                   std::greater<uint32_t>());
  const uint32_t cut = scratch.order[need - 1];
  int64_t ties = need;
  for (int64_t i = 0; i < held; ++i) ties -= keys[i] > cut;
  std::vector<int64_t>& picked = scratch.picked;
  picked.clear();
  for (int64_t i = 0; i < held; ++i)
    if (keys[i] > cut || (keys[i] == cut && ties-- > 0)) picked.push_back(columns[i]);
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
    Scratch scratch;
    for (int64_t r = begin; r < end; ++r) {
      const float* row = source + r * n;
      if (holds_nan(row, n))
        select_row<nan_aware_key>(row, n, m, scratch, index_out + r * m, value_out + r * m);
      else
        select_row<number_key>(row, n, m, scratch, index_out + r * m, value_out + r * m);
    }
  });
  return {values, indices};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("top_m", &top_m, "Row-wise top-m of a float32 CPU matrix (values, ascending indices)");
}
