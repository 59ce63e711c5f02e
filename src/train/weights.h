// Model weights in and out as safetensors with the names of the model's PyTorch state dict
// ("0.weight", "1.running_mean", "layer2.0.downsample.1.running_var", ...), so PyTorch's
// load_state_dict(strict=True) accepts what we write and we accept what it saves.
#pragma once

#include <string>

#include "train/model.h"

namespace syncbn::train {

// Strict like load_state_dict: missing, unexpected or mis-shaped entries are a syncbn::Error
// listing them; the model is unchanged then.
void load_weights(const std::string& path, Sequential& model);
void save_weights(const std::string& path, Sequential& model);

}  // namespace syncbn::train
