// Conversions between the generated protobuf messages and the plain types of types.h, and the
// one mapping between Code and grpc::StatusCode (STYLE.md rule 6). Internal to the coordinator
// library: the generated headers never reach its public headers.
#pragma once

#include <grpcpp/grpcpp.h>

#include "coordinator/status.h"
#include "coordinator/types.h"
#include "syncbn/v1/coordinator.grpc.pb.h"

namespace syncbn::coordinator {

grpc::StatusCode to_grpc_code(Code code);
Code from_grpc_code(grpc::StatusCode code);

void to_proto(const CheckpointMeta& meta, v1::CheckpointInfo* info);
CheckpointMeta from_proto(const v1::CheckpointInfo& info);
CheckpointMeta from_proto(const v1::CheckpointCommit& commit);

void to_proto(const JoinRequest& request, v1::JoinRequest* out);
JoinRequest from_proto(const v1::JoinRequest& request);
void to_proto(const JoinReply& reply, v1::JoinResponse* out);
JoinReply from_proto(const v1::JoinResponse& reply);

void to_proto(const RunStatus& status, v1::RunStatus* out);
RunStatus from_proto(const v1::RunStatus& status);

}  // namespace syncbn::coordinator
