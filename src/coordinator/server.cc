#include "coordinator/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "coordinator/coordinator_state.h"
#include "coordinator/grpc_service.h"
#include "coordinator/token.h"
#include "core/error.h"
#include "core/escape.h"

namespace syncbn::coordinator {
namespace {

std::string read_pem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  SYNCBN_REQUIRE(in, "cannot read ", what, " '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  SYNCBN_REQUIRE(text.str().find("-----BEGIN") != std::string::npos, what, " '", path,
                 "' is not a PEM file");
  return text.str();
}

// Splits "host:port" / "[v6]:port" into host (without brackets) and port text.
bool split_host_port(std::string_view listen, std::string_view* host, std::string_view* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos) return false;
  *host = listen.substr(0, colon);
  *port = listen.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return true;
}

}  // namespace

void validate_listen_address(std::string_view listen) {
  if (listen.substr(0, 5) == "unix:" || listen.substr(0, 14) == "unix-abstract:") return;
  const std::string quoted = str_cat("'", escape_control(listen), "'");
  const size_t colon = listen.rfind(':');
  SYNCBN_REQUIRE(colon != std::string_view::npos && colon > 0, "--listen ", quoted,
                 ": expected HOST:PORT, [IPV6]:PORT or unix:PATH");
  const std::string_view host = listen.substr(0, colon), port = listen.substr(colon + 1);
  bool digits = !port.empty() && port.size() <= 5;
  for (const char c : port) digits = digits && c >= '0' && c <= '9';
  SYNCBN_REQUIRE(digits && std::stoi(std::string(port)) <= 65535, "--listen ", quoted,
                 ": the port must be a number from 0 to 65535");
  const bool bracketed = host.front() == '[' && host.back() == ']';
  SYNCBN_REQUIRE(bracketed || host.find(':') == std::string_view::npos, "--listen ", quoted,
                 ": an IPv6 address goes in brackets, e.g. [::1]:", port);
}

bool is_loopback_listen_address(std::string_view listen) {
  if (listen.substr(0, 5) == "unix:" || listen.substr(0, 14) == "unix-abstract:") return true;
  std::string_view host, port;
  if (listen.empty() || listen.front() != '[') {
    const size_t colon = listen.rfind(':');
    if (colon != std::string_view::npos &&
        listen.substr(0, colon).find(':') != std::string_view::npos)
      return false;  // an unbracketed IPv6 address is not an address we listen on
  }
  if (!split_host_port(listen, &host, &port)) return false;
  if (host == "localhost" || (host == "::1" && listen.front() == '[')) return true;
  // 127.0.0.0/8 in dotted quad.
  if (host.substr(0, 4) != "127.") return false;
  int dots = 0;
  for (const char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

CoordinatorServer::CoordinatorServer(ServerOptions options) {
  if (!options.log) {
    options.log = [](const std::string& message) {
      std::fprintf(stderr, "syncbn coordinator: %s\n", escape_control(message).c_str());
    };
  }
  SYNCBN_REQUIRE(!options.state_dir.empty(), "the coordinator needs --state-dir DIR");
  validate_listen_address(options.listen);
  SYNCBN_REQUIRE(options.keep_last >= 1 && options.keep_last <= kMaxKeepLast,
                 "--keep-last must be 1 to ", kMaxKeepLast, ", got ", options.keep_last);
  std::string token;
  if (!options.token_file.empty()) token = read_token_file(options.token_file);
  if (!is_loopback_listen_address(options.listen) && token.empty()) {
    throw Error(str_cat("listening on '", options.listen,
                        "', which is not a loopback address, requires --token-file FILE "
                        "(a secret token, mode 0600); use --listen 127.0.0.1:PORT for local runs"));
  }
  SYNCBN_REQUIRE(options.tls_cert_file.empty() == options.tls_key_file.empty(),
                 "--tls-cert and --tls-key go together");
  SYNCBN_REQUIRE(options.tls_client_ca_file.empty() || !options.tls_cert_file.empty(),
                 "--tls-client-ca needs --tls-cert and --tls-key");

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (options.tls_cert_file.empty()) {
    credentials = grpc::InsecureServerCredentials();
  } else {
    grpc::SslServerCredentialsOptions ssl(
        options.tls_client_ca_file.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    if (!options.tls_client_ca_file.empty()) {
      ssl.pem_root_certs = read_pem(options.tls_client_ca_file, "TLS client CA");
    }
    ssl.pem_key_cert_pairs.push_back({read_pem(options.tls_key_file, "TLS key"),
                                      read_pem(options.tls_cert_file, "TLS certificate")});
    credentials = grpc::SslServerCredentials(ssl);
  }

  CoordinatorState::Options state_options;
  state_options.state_dir = options.state_dir;
  state_options.default_keep_last = options.keep_last;
  state_options.max_checkpoint_bytes = options.max_checkpoint_bytes;
  state_options.max_runs = options.max_runs;
  state_options.max_config_bytes = options.max_config_bytes;
  state_options.metrics_per_run = options.metrics_per_run;
  state_options.log = options.log;
  state_ = std::make_unique<CoordinatorState>(state_options);
  service_ = std::make_unique<CoordinatorService>(*state_, token, options.log);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(kMaxMessageBytes));
  builder.SetMaxSendMessageSize(static_cast<int>(kMaxMessageBytes));
  // Off: a second coordinator on the same port must fail to bind, not share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // A unix: socket is created under umask 077: only this user may connect (like the token
  // file, it is this user's run's).
  const bool unix_socket = options.listen.substr(0, 5) == "unix:";
  const mode_t old_umask = unix_socket ? ::umask(077) : 0;
  server_ = builder.BuildAndStart();
  if (unix_socket) ::umask(old_umask);
  if (!server_ || port_ == 0) {
    if (server_) server_->Shutdown();
    throw Error(str_cat("cannot listen on '", options.listen,
                        "': the address is in use (another coordinator?) or invalid"));
  }
  std::string_view host, port_text;
  if (split_host_port(options.listen, &host, &port_text) &&
      options.listen.substr(0, 5) != "unix:") {
    address_ =
        options.listen.substr(0, options.listen.size() - port_text.size()) + std::to_string(port_);
  } else {
    address_ = options.listen;
  }
}

CoordinatorServer::~CoordinatorServer() {
  shutdown();
  server_->Wait();
}

void CoordinatorServer::wait() { server_->Wait(); }

void CoordinatorServer::shutdown() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace syncbn::coordinator
