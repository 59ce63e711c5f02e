// The trainer's client of the coordinator (DESIGN.md §4, STYLE.md rule 9).
//
//   Client client({.address = "127.0.0.1:7390"});
//   JoinReply run = client.join({.run_id = "exp1", .rank = r, .world_size = n, ...});
//   client.heartbeat({"exp1", r, run.generation, step});
//   client.put_checkpoint(bytes, meta);                  // rank 0, every k steps
//   std::optional<Client::Checkpoint> c = client.get_checkpoint("exp1");  // resume
//
// Every call has a deadline (call_timeout for unary calls, transfer_timeout for a checkpoint
// stream). Only UNAVAILABLE (coordinator down or unreachable) is retried, with exponential
// backoff from initial_backoff doubling up to max_backoff (with ±20% jitter); once the
// coordinator has been unavailable for longer than unavailable_limit the call throws a
// ClientError saying so. Every other failure throws at once: ClientError carries the status
// code (e.g. kFailedPrecondition when a Join is refused) and the coordinator's message.
//
// Thread-safe: one Client may be shared by threads (e.g. a heartbeat thread beside training).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/status.h"
#include "coordinator/types.h"

namespace syncbn::coordinator {

struct ClientOptions {
  std::string address;  // host:port of the coordinator
  std::string token;    // sent as "authorization: Bearer <token>" when not empty
  // TLS: when tls_root_certs_file is set the channel uses TLS, trusting those PEM roots; a
  // client certificate (for --tls-client-ca) with tls_cert_file and tls_key_file.
  std::string tls_root_certs_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::chrono::milliseconds call_timeout{10'000};
  std::chrono::milliseconds transfer_timeout{600'000};
  // 0: no retry at all, the first UNAVAILABLE throws (for a caller with its own retry loop).
  std::chrono::milliseconds unavailable_limit{60'000};
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5'000};
};

// A call that failed; code() is the gRPC status (kUnavailable after unavailable_limit).
class ClientError : public Error {
 public:
  ClientError(Code code, const std::string& message) : Error(message), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Joins the run; returns its config (the same for all ranks of the generation). Throws
  // ClientError(kFailedPrecondition) when this rank's config hash, world size or generation
  // disagrees with the run's.
  JoinReply join(const JoinRequest& request);

  // Records this rank's progress; returns the run's current generation.
  int64_t heartbeat(const HeartbeatRequest& request);

  // Sends metrics for `syncbn status` (received_unix_ms is ignored).
  void report_metrics(const MetricsReport& report);

  // Streams `data` as a checkpoint in 2 MiB chunks and returns it as committed (durable). From
  // `meta` the client uses run_id, step, generation, config_hash, world_size and
  // format_version (>= 1); size and CRC32C are computed from `data`. A retry after UNAVAILABLE
  // that finds the step already committed with the same size and CRC32C counts as success.
  CheckpointMeta put_checkpoint(std::string_view data, const CheckpointMeta& meta);

  struct Checkpoint {
    CheckpointMeta meta;
    std::string data;  // verified: every chunk's CRC32C, the whole size and CRC32C
  };
  // The newest valid checkpoint of the run, or the one at `step`; nullopt when there is none.
  std::optional<Checkpoint> get_checkpoint(const std::string& run_id,
                                           std::optional<int64_t> step = std::nullopt);

  // The run's committed checkpoints, newest first.
  std::vector<CheckpointMeta> list_checkpoints(const std::string& run_id);

  // One run, or every run when `run_id` is empty.
  std::vector<RunStatus> get_run_status(const std::string& run_id = "");

  const std::string& address() const;
  const ClientOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace syncbn::coordinator
