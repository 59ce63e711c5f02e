// The coordinator's gRPC server (`syncbn coordinator`), an RAII owner of the state, the
// service and the grpc::Server.
//
//   CoordinatorServer server({.listen = "127.0.0.1:0", .state_dir = "runs/coord"});
//   std::printf("listening on %s\n", server.address().c_str());
//   server.wait();  // until shutdown() from another thread
//
// Security: a listen address that is not loopback (127.0.0.0/8, ::1, localhost, unix:) needs a
// token file (mode 0600); with one, every RPC of syncbn.v1.Coordinator needs
// `authorization: Bearer <token>`, checked in constant time. gRPC health checking
// (grpc.health.v1.Health) and server reflection are on and need no token: they are gRPC's own
// services, which this version of gRPC gives no hook to authorize on an insecure channel, and
// reveal only liveness and the schema that is in the repository. TLS with
// --tls-cert/--tls-key, and client certificates (which do cover every service) with
// --tls-client-ca. Messages are bounded by 4 MiB both ways; SO_REUSEPORT is off, so a second
// coordinator on the same port fails to start instead of sharing it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "coordinator/types.h"

namespace grpc {
class Server;
}

namespace syncbn::coordinator {

class CoordinatorState;
class CoordinatorService;

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // host:port, [v6]:port or unix:path; port 0 picks one
  std::string state_dir;               // required
  std::string token_file;              // required when `listen` is not loopback
  std::string tls_cert_file;           // PEM; TLS when set (with tls_key_file)
  std::string tls_key_file;
  std::string tls_client_ca_file;  // PEM; when set, clients must present a certificate it signed
  int32_t keep_last = kDefaultKeepLast;
  int64_t max_checkpoint_bytes = kDefaultMaxCheckpointBytes;
  int64_t max_runs = kDefaultMaxRuns;  // see CoordinatorState::Options
  int64_t max_config_bytes = kDefaultMaxConfigBytes;
  int64_t metrics_per_run = kDefaultMetricsPerRun;
  std::function<void(const std::string&)> log;  // default: stderr
};

class CoordinatorServer {
 public:
  // Validates the options, opens the state (recovering the store) and starts serving. Throws
  // syncbn::Error with a clear message on bad options, an unusable state directory, or an
  // address that cannot be bound (in use, or invalid).
  explicit CoordinatorServer(ServerOptions options);
  // Shuts down (in-flight calls get up to 2 s) and waits.
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  int port() const { return port_; }
  // The bound address with the real port, e.g. "127.0.0.1:41234".
  const std::string& address() const { return address_; }
  CoordinatorState& state() { return *state_; }

  void wait();      // blocks until shutdown()
  void shutdown();  // thread-safe, idempotent

 private:
  std::unique_ptr<CoordinatorState> state_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

// Whether a listen address is loopback only: 127.0.0.0/8, [::1], localhost, or a unix socket.
bool is_loopback_listen_address(std::string_view listen);

}  // namespace syncbn::coordinator
