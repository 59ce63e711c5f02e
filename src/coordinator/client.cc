#include "coordinator/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "coordinator/crc32c.h"
#include "coordinator/proto_convert.h"

namespace syncbn::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

// Chunks of 2 MiB of data keep each message (data + offset + CRC + framing) well under 4 MiB.
constexpr size_t kPutChunkBytes = static_cast<size_t>(kMaxChunkBytes);

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  SYNCBN_REQUIRE(in, "cannot read ", what, " '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

struct Client::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;

  // Runs `attempt` (one RPC on a fresh context) until it succeeds or fails with something
  // other than UNAVAILABLE, or UNAVAILABLE has lasted past options.unavailable_limit.
  grpc::Status call(const char* method, std::chrono::milliseconds timeout,
                    const std::function<grpc::Status(grpc::ClientContext&)>& attempt) {
    thread_local std::mt19937 random(std::random_device{}());
    std::optional<Clock::time_point> unavailable_since;
    auto backoff = options.initial_backoff;
    for (;;) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + timeout);
      if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
      const grpc::Status status = attempt(context);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status;
      const auto now = Clock::now();
      if (!unavailable_since) unavailable_since = now;
      const auto down =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - *unavailable_since);
      if (options.unavailable_limit.count() == 0) {  // the caller retries (BackgroundClient)
        throw ClientError(Code::kUnavailable, str_cat(method, ": ", status.error_message()));
      }
      if (down + backoff > options.unavailable_limit) {
        throw ClientError(
            Code::kUnavailable,
            str_cat("the coordinator at ", options.address, " has been unreachable for ",
                    down.count() / 1000.0, " s (limit ", options.unavailable_limit.count() / 1000.0,
                    " s) during ", method, ": ", status.error_message(),
                    "; is `syncbn coordinator` running there?"));
      }
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      std::this_thread::sleep_for(
          std::chrono::duration_cast<std::chrono::milliseconds>(backoff * jitter(random)));
      backoff = std::min(backoff * 2, options.max_backoff);
    }
  }

  [[noreturn]] void raise(const char* method, const grpc::Status& status) const {
    const Code code = from_grpc_code(status.error_code());
    throw ClientError(code, str_cat("coordinator ", options.address, " ", method, ": ",
                                    code_name(code), ": ", status.error_message()));
  }

  void check(const char* method, const grpc::Status& status) const {
    if (!status.ok()) raise(method, status);
  }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  SYNCBN_REQUIRE(!options.address.empty(), "the coordinator address is empty");
  SYNCBN_REQUIRE(options.call_timeout.count() > 0 && options.transfer_timeout.count() > 0 &&
                     options.initial_backoff.count() > 0 &&
                     options.max_backoff >= options.initial_backoff,
                 "coordinator client: timeouts and backoffs must be positive");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_root_certs_file.empty()) {
    SYNCBN_REQUIRE(options.tls_cert_file.empty(), "a TLS client certificate needs TLS roots");
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read_file(options.tls_root_certs_file, "TLS root certificates");
    if (!options.tls_cert_file.empty()) {
      ssl.pem_cert_chain = read_file(options.tls_cert_file, "TLS client certificate");
      ssl.pem_private_key = read_file(options.tls_key_file, "TLS client key");
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxMessageBytes));
  args.SetMaxSendMessageSize(static_cast<int>(kMaxMessageBytes));
  // Our own retry loop is the only one (UNAVAILABLE only, bounded).
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // Reconnect promptly when the coordinator comes back.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(std::max<int64_t>(options.max_backoff.count(), 100)));
  impl_->channel = grpc::CreateCustomChannel(options.address, credentials, args);
  impl_->stub = v1::Coordinator::NewStub(impl_->channel);
  impl_->options = std::move(options);
}

Client::~Client() = default;

const std::string& Client::address() const { return impl_->options.address; }

const ClientOptions& Client::options() const { return impl_->options; }

JoinReply Client::join(const JoinRequest& request) {
  v1::JoinRequest message;
  to_proto(request, &message);
  v1::JoinResponse response;
  impl_->check("Join", impl_->call("Join", impl_->options.call_timeout, [&](auto& context) {
    return impl_->stub->Join(&context, message, &response);
  }));
  return from_proto(response);
}

int64_t Client::heartbeat(const HeartbeatRequest& request) {
  v1::HeartbeatRequest message;
  message.set_run_id(request.run_id);
  message.set_rank(request.rank);
  message.set_generation(request.generation);
  message.set_step(request.step);
  message.set_activity(request.activity);
  v1::HeartbeatResponse response;
  impl_->check("Heartbeat",
               impl_->call("Heartbeat", impl_->options.call_timeout, [&](auto& context) {
                 return impl_->stub->Heartbeat(&context, message, &response);
               }));
  return response.generation();
}

void Client::report_metrics(const MetricsReport& report) {
  v1::ReportMetricsRequest message;
  message.set_run_id(report.run_id);
  message.set_rank(report.rank);
  message.set_generation(report.generation);
  message.set_step(report.step);
  for (const auto& [name, value] : report.values) {
    v1::Metric* metric = message.add_metrics();
    metric->set_name(name);
    metric->set_value(value);
  }
  v1::ReportMetricsResponse response;
  impl_->check("ReportMetrics",
               impl_->call("ReportMetrics", impl_->options.call_timeout, [&](auto& context) {
                 return impl_->stub->ReportMetrics(&context, message, &response);
               }));
}

CheckpointMeta Client::put_checkpoint(std::string_view data, const CheckpointMeta& meta) {
  v1::PutCheckpointRequest commit;
  {
    CheckpointMeta full = meta;
    full.size_bytes = static_cast<int64_t>(data.size());
    full.crc32c = crc32c(data);
    v1::CheckpointInfo info;
    to_proto(full, &info);
    v1::CheckpointCommit* c = commit.mutable_commit();
    c->set_run_id(info.run_id());
    c->set_step(info.step());
    c->set_generation(info.generation());
    c->set_config_hash(info.config_hash());
    c->set_world_size(info.world_size());
    c->set_format_version(info.format_version());
    c->set_size_bytes(info.size_bytes());
    c->set_crc32c(info.crc32c());
  }
  int attempts = 0;
  v1::PutCheckpointResponse response;
  const grpc::Status status =
      impl_->call("PutCheckpoint", impl_->options.transfer_timeout, [&](auto& context) {
        ++attempts;
        response.Clear();
        auto writer = impl_->stub->PutCheckpoint(&context, &response);
        v1::PutCheckpointRequest chunk_message;
        bool sent = true;
        for (size_t offset = 0; offset < data.size() && sent; offset += kPutChunkBytes) {
          const std::string_view piece = data.substr(offset, kPutChunkBytes);
          v1::CheckpointChunk* chunk = chunk_message.mutable_chunk();
          chunk->set_offset(static_cast<int64_t>(offset));
          chunk->set_data(piece.data(), piece.size());
          chunk->set_crc32c(crc32c(piece));
          sent = writer->Write(chunk_message);
        }
        // A failed Write means the server already answered (an error): Finish reports it.
        if (sent) sent = writer->Write(commit);
        if (sent) writer->WritesDone();
        return writer->Finish();
      });
  if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS && attempts > 1) {
    // The previous attempt may have committed before its answer was lost.
    for (const CheckpointMeta& existing : list_checkpoints(meta.run_id)) {
      if (existing.step == meta.step && existing.crc32c == commit.commit().crc32c() &&
          existing.size_bytes == commit.commit().size_bytes()) {
        return existing;
      }
    }
  }
  impl_->check("PutCheckpoint", status);
  return from_proto(response.checkpoint());
}

std::optional<Client::Checkpoint> Client::get_checkpoint(const std::string& run_id,
                                                         std::optional<int64_t> step) {
  v1::GetCheckpointRequest request;
  request.set_run_id(run_id);
  if (step) request.set_step(*step);
  Checkpoint checkpoint;
  std::string problem;  // a broken stream: the data arrived but does not verify
  const grpc::Status status =
      impl_->call("GetCheckpoint", impl_->options.transfer_timeout, [&](auto& context) {
        checkpoint = Checkpoint{};
        problem.clear();
        auto reader = impl_->stub->GetCheckpoint(&context, request);
        v1::GetCheckpointResponse message;
        bool have_info = false;
        uint32_t crc = 0;
        while (reader->Read(&message)) {
          if (!problem.empty()) continue;  // drain, then report
          if (message.has_info() && !have_info) {
            checkpoint.meta = from_proto(message.info());
            if (checkpoint.meta.size_bytes < 0 || checkpoint.meta.size_bytes > (int64_t{1} << 40)) {
              problem = str_cat("implausible checkpoint size ", checkpoint.meta.size_bytes);
              continue;
            }
            // Reserve up to 256 MiB up front; a larger one grows as chunks arrive (the size
            // comes from the peer and is not trusted with a huge allocation).
            checkpoint.data.reserve(static_cast<size_t>(
                std::min<int64_t>(checkpoint.meta.size_bytes, int64_t{256} << 20)));
            have_info = true;
          } else if (message.has_chunk() && have_info) {
            const v1::CheckpointChunk& chunk = message.chunk();
            if (chunk.offset() != static_cast<int64_t>(checkpoint.data.size())) {
              problem = str_cat("chunk at offset ", chunk.offset(), ", expected ",
                                checkpoint.data.size());
            } else if (crc32c(chunk.data()) != chunk.crc32c()) {
              problem = str_cat("chunk at offset ", chunk.offset(), " fails its CRC32C");
            } else if (static_cast<int64_t>(checkpoint.data.size() + chunk.data().size()) >
                       checkpoint.meta.size_bytes) {
              problem = "more data than the checkpoint's size";
            } else {
              checkpoint.data += chunk.data();
              crc = crc32c_extend(crc, chunk.data().data(), chunk.data().size());
            }
          } else {
            problem = "unexpected message order";
          }
        }
        grpc::Status finished = reader->Finish();
        if (finished.ok() && problem.empty()) {
          if (!have_info) {
            problem = "no checkpoint info in the stream";
          } else if (static_cast<int64_t>(checkpoint.data.size()) != checkpoint.meta.size_bytes) {
            problem = str_cat("received ", checkpoint.data.size(), " of ",
                              checkpoint.meta.size_bytes, " bytes");
          } else if (crc != checkpoint.meta.crc32c) {
            problem = "the whole checkpoint fails its CRC32C";
          }
        }
        return finished;
      });
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return std::nullopt;
  impl_->check("GetCheckpoint", status);
  if (!problem.empty()) {
    throw ClientError(Code::kDataLoss, str_cat("coordinator ", impl_->options.address,
                                               " GetCheckpoint of run '", run_id, "': ", problem));
  }
  return checkpoint;
}

std::vector<CheckpointMeta> Client::list_checkpoints(const std::string& run_id) {
  v1::ListCheckpointsRequest request;
  request.set_run_id(run_id);
  v1::ListCheckpointsResponse response;
  impl_->check("ListCheckpoints",
               impl_->call("ListCheckpoints", impl_->options.call_timeout, [&](auto& context) {
                 return impl_->stub->ListCheckpoints(&context, request, &response);
               }));
  std::vector<CheckpointMeta> result;
  for (const v1::CheckpointInfo& info : response.checkpoints()) result.push_back(from_proto(info));
  return result;
}

std::vector<RunStatus> Client::get_run_status(const std::string& run_id) {
  v1::GetRunStatusRequest request;
  request.set_run_id(run_id);
  v1::GetRunStatusResponse response;
  impl_->check("GetRunStatus",
               impl_->call("GetRunStatus", impl_->options.call_timeout, [&](auto& context) {
                 return impl_->stub->GetRunStatus(&context, request, &response);
               }));
  std::vector<RunStatus> result;
  for (const v1::RunStatus& status : response.runs()) result.push_back(from_proto(status));
  return result;
}

}  // namespace syncbn::coordinator
