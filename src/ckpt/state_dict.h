// A model's state dict as PyTorch names it: "<prefix>.<name>" for each parameter and buffer,
// e.g. "0.weight", "1.running_mean", "1.num_batches_tracked" for a torch.nn.Sequential. The
// state dict does not own the values: each slot points into a layer (nn::ParamRef /
// nn::BufferRef), so saving reads the live tensors and loading writes them in place.
#pragma once

#include <string>
#include <vector>

#include "ckpt/safetensors.h"
#include "nn/layer.h"
#include "tensor/tensor.h"

namespace syncbn::ckpt {

// One state-dict entry: float32 (parameters, running stats) or an int64 scalar
// (num_batches_tracked, a 0-dim tensor in PyTorch). Exactly one of f32 / i64 is set.
struct StateSlot {
  std::string name;
  Tensor* f32 = nullptr;
  int64_t* i64 = nullptr;
};

// Appends a layer's parameters, then its buffers (PyTorch's state_dict order), named
// prefix + "." + name, or just name when prefix is empty.
void append_state(const std::string& prefix, const std::vector<nn::ParamRef>& params,
                  const std::vector<nn::BufferRef>& buffers, std::vector<StateSlot>& out);
// The same, collecting them from `layer`.
void append_layer_state(const std::string& prefix, nn::Layer& layer, std::vector<StateSlot>& out);

// The current values: F32 entries with the tensors' logical shapes, I64 scalars with shape [].
std::vector<TensorEntry> state_entries(const std::vector<StateSlot>& state);

// Copies `entries` into the slots, like PyTorch's load_state_dict. Every problem is collected
// first and reported in one syncbn::Error in PyTorch's wording, and then nothing is changed:
//   Error(s) in loading state_dict from <source>:
//     Missing key(s) in state_dict: "0.bias".
//     Unexpected key(s) in state_dict: "2.weight".
//     size mismatch for 0.weight: copying a param with shape [4, 1, 3, 3] from checkpoint,
//       the shape in current model is [8, 1, 3, 3].
//     dtype mismatch for 1.num_batches_tracked: the checkpoint has F32, the model expects I64.
// With strict = false missing and unexpected keys are ignored (mismatches still fail).
void load_state(const std::vector<TensorEntry>& entries, const std::vector<StateSlot>& state,
                const std::string& source, bool strict = true);

}  // namespace syncbn::ckpt
