// What the CUDA step backend (train/cuda/cuda_backend.cc) builds from the config and the host
// model, as plain data: a graph of nodes in execution order, each with its kind, per-sample
// shapes, hyper-parameters and inputs; each parameter's place in the flat gradient array; the
// gradient buckets. Built in every build, so the CPU tests (tests/train/device_plan_test.cc)
// check it against the host model; the backend only turns it into device objects.
//
// The graph. Node i reads the output of node `input` (kModelInput: the batch) and writes its own
// output. A residual block becomes its main path's nodes, its downsample's (reading the block's
// input too), a kAdd node of the two branches and the output ReLU. The output of a node read by
// more than one node (`consumers` > 1: a block's input, the branch point) stays alive until the
// last of them has run, and backward accumulates its gradient from each of them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset_info.h"
#include "train/config.h"
#include "train/layer_kinds.h"
#include "train/model.h"

namespace syncbn::train {

constexpr int kModelInput = -1;

struct PlannedLayer {
  DeviceLayerKind kind = DeviceLayerKind::kPassThrough;
  std::string name;  // the host layer's dotted path; a block's add: "<block path>.add"
  int leaf = -1;     // the host leaf (Sequential::layer) it runs (a block's ReLU runs 2-3 times);
                     // -1: kAdd
  SampleShape in, out;
  int input = kModelInput;                      // the node whose output this node reads
  int shortcut = kModelInput;                   // kAdd: the second operand (the first is `input`)
  int consumers = 0;                            // nodes that read this node's output
  int64_t kernel = 1, stride = 1, padding = 0;  // conv, max pool
  int64_t groups = 0;                           // kGroupNorm
  int weight = -1, bias = -1;                   // indices into DevicePlan::params
};

struct PlannedParam {
  std::string name;  // the host model's ("layer1.0.conv1.weight")
  size_t layer = 0;  // the node that owns it
  bool is_bias = false;
  int64_t numel = 0;
  int64_t offset = 0;  // in the flat gradient (and momentum) array, parameters in order
  int bucket = -1;
};

// A range of the flat gradient array, allreduced as one: the parameters [first, last] (indices),
// consecutive, so the range is contiguous. Buckets are in the order of the parameters' reverse
// registration order (the last parameters first).
struct PlannedBucket {
  int64_t begin = 0, end = 0;
  size_t first = 0, last = 0;
};

struct DevicePlan {
  std::vector<PlannedLayer> layers;  // the graph's nodes, in execution order
  std::vector<PlannedParam> params;  // the host model's parameters(), in order
  std::vector<PlannedBucket> buckets;
  int64_t total_params = 0;  // elements
};

// Plans `model` (built from `config` and `info` by build_model) for the device. Buckets hold about
// bucket_bytes of float32 gradients each (at least one parameter). Throws syncbn::Error naming
// the layer when the host model is not the one the config describes.
DevicePlan plan_device_model(const Config& config, const data::DatasetInfo& info, Sequential& model,
                             int64_t bucket_bytes = int64_t{1} << 20);

}  // namespace syncbn::train
