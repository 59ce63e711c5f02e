#include "train/weights.h"

#include "ckpt/safetensors.h"
#include "ckpt/state_dict.h"

namespace syncbn::train {
namespace {

// Layer by layer, parameters then buffers: the order of PyTorch's state_dict().
std::vector<ckpt::StateSlot> state_slots(Sequential& model) {
  std::vector<ckpt::StateSlot> slots;
  for (size_t i = 0; i < model.size(); ++i)
    ckpt::append_layer_state(model.layer_name(i), model.layer(i), slots);
  return slots;
}

}  // namespace

void load_weights(const std::string& path, Sequential& model) {
  ckpt::load_state(ckpt::read_safetensors(path), state_slots(model), path, /*strict=*/true);
}

void save_weights(const std::string& path, Sequential& model) {
  ckpt::write_safetensors(path, ckpt::state_entries(state_slots(model)), {{"format", "pt"}});
}

}  // namespace syncbn::train
