// The gRPC adapter: a thin layer that checks the token, converts messages, calls
// CoordinatorState and maps its ServiceErrors to grpc::Status (via proto_convert.h). No service
// logic lives here (STYLE.md rule 6). Internal to the coordinator library.
#pragma once

#include <functional>
#include <string>

#include "coordinator/coordinator_state.h"
#include "coordinator/proto_convert.h"

namespace syncbn::coordinator {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // `token` empty: no authorization required. `log` receives one line per refused or failed
  // request and per committed checkpoint (never the token or any metadata).
  CoordinatorService(CoordinatorState& state, std::string token,
                     std::function<void(const std::string&)> log);

  grpc::Status Join(grpc::ServerContext* context, const v1::JoinRequest* request,
                    v1::JoinResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ReportMetrics(grpc::ServerContext* context, const v1::ReportMetricsRequest* request,
                             v1::ReportMetricsResponse* response) override;
  grpc::Status PutCheckpoint(grpc::ServerContext* context,
                             grpc::ServerReader<v1::PutCheckpointRequest>* reader,
                             v1::PutCheckpointResponse* response) override;
  grpc::Status GetCheckpoint(grpc::ServerContext* context, const v1::GetCheckpointRequest* request,
                             grpc::ServerWriter<v1::GetCheckpointResponse>* writer) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const v1::ListCheckpointsRequest* request,
                               v1::ListCheckpointsResponse* response) override;
  grpc::Status GetRunStatus(grpc::ServerContext* context, const v1::GetRunStatusRequest* request,
                            v1::GetRunStatusResponse* response) override;

 private:
  // Checks the token, runs `body`, and turns what it throws into a status.
  grpc::Status handle(grpc::ServerContext* context, const char* method,
                      const std::function<void()>& body);

  CoordinatorState& state_;
  std::string token_;
  std::function<void(const std::string&)> log_;
};

}  // namespace syncbn::coordinator
