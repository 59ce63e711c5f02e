#include "coordinator/grpc_service.h"

#include <new>
#include <vector>

#include "coordinator/crc32c.h"
#include "coordinator/posix_file.h"
#include "coordinator/token.h"
#include "core/escape.h"

namespace syncbn::coordinator {
namespace {

// GetCheckpoint sends 1 MiB chunks: well under the 2 MiB chunk bound and the 4 MiB message.
constexpr size_t kServeChunkBytes = size_t{1} << 20;

}  // namespace

CoordinatorService::CoordinatorService(CoordinatorState& state, std::string token,
                                       std::function<void(const std::string&)> log)
    : state_(state), token_(std::move(token)), log_(std::move(log)) {}

grpc::Status CoordinatorService::handle(grpc::ServerContext* context, const char* method,
                                        const std::function<void()>& body) {
  Code code = Code::kOk;
  std::string message;
  try {
    if (!token_.empty()) {
      const auto& metadata = context->client_metadata();
      const auto found = metadata.find("authorization");
      if (found == metadata.end()) {
        fail(Code::kUnauthenticated,
             "this coordinator requires a token: send metadata "
             "'authorization: Bearer <token>'");
      }
      const std::string_view given(found->second.data(), found->second.size());
      if (!authorization_matches(given, token_)) {
        fail(Code::kUnauthenticated, "the token does not match");
      }
    }
    body();
  } catch (const ServiceError& e) {
    code = e.code();
    message = e.what();
  } catch (const std::bad_alloc&) {
    code = Code::kResourceExhausted;
    message = "out of memory";
  } catch (const std::exception& e) {
    code = Code::kInternal;
    message = e.what();
  }
  if (code == Code::kOk) return grpc::Status::OK;
  // The message may quote what the peer sent: escaped, so no peer can forge a log line.
  log_(escape_control(
      str_cat(method, " from ", context->peer(), ": ", code_name(code), ": ", message)));
  return grpc::Status(to_grpc_code(code), message);
}

grpc::Status CoordinatorService::Join(grpc::ServerContext* context, const v1::JoinRequest* request,
                                      v1::JoinResponse* response) {
  return handle(context, "Join", [&] { to_proto(state_.join(from_proto(*request)), response); });
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* context,
                                           const v1::HeartbeatRequest* request,
                                           v1::HeartbeatResponse* response) {
  return handle(context, "Heartbeat", [&] {
    response->set_generation(
        state_.heartbeat({request->run_id(), request->rank(), request->generation(),
                          request->step(), request->activity()}));
  });
}

grpc::Status CoordinatorService::ReportMetrics(grpc::ServerContext* context,
                                               const v1::ReportMetricsRequest* request,
                                               v1::ReportMetricsResponse*) {
  return handle(context, "ReportMetrics", [&] {
    if (static_cast<size_t>(request->metrics_size()) > kMaxMetricsPerReport) {
      fail(Code::kInvalidArgument, "a metrics report has ", request->metrics_size(),
           " values; at most ", kMaxMetricsPerReport, " are allowed");
    }
    MetricsReport report;
    report.run_id = request->run_id();
    report.rank = request->rank();
    report.generation = request->generation();
    report.step = request->step();
    for (const v1::Metric& metric : request->metrics()) {
      report.values.emplace_back(metric.name(), metric.value());
    }
    state_.report_metrics(std::move(report));
  });
}

grpc::Status CoordinatorService::PutCheckpoint(grpc::ServerContext* context,
                                               grpc::ServerReader<v1::PutCheckpointRequest>* reader,
                                               v1::PutCheckpointResponse* response) {
  return handle(context, "PutCheckpoint", [&] {
    // The Upload removes its temporary file when this scope ends without a commit: an error, a
    // cancelled stream or a stream that ends early leaves nothing behind.
    auto upload = state_.begin_checkpoint_upload();
    v1::PutCheckpointRequest message;
    while (reader->Read(&message)) {
      if (message.has_chunk()) {
        const v1::CheckpointChunk& chunk = message.chunk();
        upload->append(chunk.offset(), chunk.data(), chunk.crc32c());
        continue;
      }
      if (!message.has_commit()) {
        fail(Code::kInvalidArgument, "a PutCheckpoint message holds neither chunk nor commit");
      }
      // The commit message must be the last: the stream has to end before anything is made
      // durable, so a client that goes on sending is refused with nothing committed.
      v1::PutCheckpointRequest extra;
      if (reader->Read(&extra)) {
        fail(Code::kInvalidArgument, "a PutCheckpoint message follows the commit message");
      }
      if (context->IsCancelled()) fail(Code::kCancelled, "the client cancelled the upload");
      const CheckpointMeta committed =
          state_.commit_checkpoint(*upload, from_proto(message.commit()));
      to_proto(committed, response->mutable_checkpoint());
      log_(str_cat("committed checkpoint step ", committed.step, " of run '", committed.run_id,
                   "' (", committed.size_bytes, " bytes, generation ", committed.generation, ")"));
      return;
    }
    if (context->IsCancelled()) fail(Code::kCancelled, "the client cancelled the upload");
    fail(Code::kInvalidArgument, "the PutCheckpoint stream ended after ", upload->size(),
         " bytes without a commit message; nothing was committed");
  });
}

grpc::Status CoordinatorService::GetCheckpoint(
    grpc::ServerContext* context, const v1::GetCheckpointRequest* request,
    grpc::ServerWriter<v1::GetCheckpointResponse>* writer) {
  return handle(context, "GetCheckpoint", [&] {
    std::optional<int64_t> step;
    if (request->has_step()) step = request->step();
    const CheckpointStore::OpenCheckpoint checkpoint =
        state_.open_checkpoint(request->run_id(), step);
    v1::GetCheckpointResponse message;
    to_proto(checkpoint.meta, message.mutable_info());
    if (!writer->Write(message)) fail(Code::kCancelled, "the client went away");
    std::string buffer(kServeChunkBytes, '\0');
    for (int64_t offset = 0; offset < checkpoint.meta.size_bytes;) {
      const int64_t want = std::min<int64_t>(static_cast<int64_t>(kServeChunkBytes),
                                             checkpoint.meta.size_bytes - offset);
      const int64_t n =
          read_at(checkpoint.fd.get(), buffer.data(), static_cast<size_t>(want), offset);
      if (n != want) {
        fail(Code::kDataLoss, "checkpoint step ", checkpoint.meta.step, " of run '",
             checkpoint.meta.run_id, "' could not be read at offset ", offset);
      }
      message.Clear();
      v1::CheckpointChunk* chunk = message.mutable_chunk();
      chunk->set_offset(offset);
      chunk->set_data(buffer.data(), static_cast<size_t>(n));
      chunk->set_crc32c(crc32c_extend(0, buffer.data(), static_cast<size_t>(n)));
      if (!writer->Write(message)) fail(Code::kCancelled, "the client went away");
      offset += n;
    }
  });
}

grpc::Status CoordinatorService::ListCheckpoints(grpc::ServerContext* context,
                                                 const v1::ListCheckpointsRequest* request,
                                                 v1::ListCheckpointsResponse* response) {
  return handle(context, "ListCheckpoints", [&] {
    for (const CheckpointMeta& meta : state_.list_checkpoints(request->run_id())) {
      to_proto(meta, response->add_checkpoints());
    }
  });
}

grpc::Status CoordinatorService::GetRunStatus(grpc::ServerContext* context,
                                              const v1::GetRunStatusRequest* request,
                                              v1::GetRunStatusResponse* response) {
  return handle(context, "GetRunStatus", [&] {
    for (const RunStatus& status : state_.run_status(request->run_id())) {
      to_proto(status, response->add_runs());
    }
  });
}

}  // namespace syncbn::coordinator
