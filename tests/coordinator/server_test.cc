// The coordinator over real gRPC on 127.0.0.1 (port 0): our Client, and hostile requests sent
// with the raw generated stub, each answered with a stated status while the server keeps
// serving.
#include "coordinator/server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "coordinator/client.h"
#include "coordinator/coordinator_state.h"
#include "core/hash.h"
#include "syncbn/v1/coordinator.grpc.pb.h"
#include "test_util.h"

namespace syncbn::coordinator {
namespace {

using testing::listing;
using testing::random_bytes;
using testing::ScratchDir;

constexpr const char* kToken = "s3cret-token-0123456789abcdef";
// The configs the tests join with, and their hashes (the coordinator checks hash == fnv1a(yaml)).
constexpr const char* kYaml = "model: {norm: syncbn}\n";
const uint64_t kHash = fnv1a(kYaml);
const uint64_t kOtherHash = fnv1a("x: 1\n");

void write_token_file(const std::string& path, const std::string& token, mode_t mode) {
  std::ofstream(path) << token << "\n";
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_token_file(dir_.sub("token"), kToken, 0600);
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.state_dir = dir_.sub("state");
    options.token_file = dir_.sub("token");
    options.log = [this](const std::string& line) {
      std::lock_guard lock(log_mutex_);
      log_.push_back(line);
    };
    server_ = std::make_unique<CoordinatorServer>(options);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Coordinator::NewStub(channel_);
    client_ = std::make_unique<Client>(client_options());
    JoinRequest join;
    join.run_id = "run";
    join.world_size = 2;
    join.generation = 3;
    join.host = "localhost";
    join.pid = 1;
    join.config_yaml = "model: {norm: syncbn}\n";
    join.config_hash = kHash;
    for (int rank = 0; rank < 2; ++rank) {
      join.rank = rank;
      client_->join(join);
    }
  }
  void TearDown() override {
    server_.reset();
    std::lock_guard lock(log_mutex_);
    for (const std::string& line : log_) {
      EXPECT_EQ(line.find(kToken), std::string::npos) << "the token leaked into the log: " << line;
    }
  }
  ClientOptions client_options() const {
    ClientOptions options;
    options.address = server_->address();
    options.token = kToken;
    options.call_timeout = std::chrono::seconds(5);
    options.unavailable_limit = std::chrono::seconds(2);
    return options;
  }
  std::unique_ptr<grpc::ClientContext> context(const std::string& token = kToken) const {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
    return c;
  }
  static CheckpointMeta meta(int64_t step, int64_t generation = 3) {
    CheckpointMeta m;
    m.run_id = "run";
    m.step = step;
    m.generation = generation;
    m.config_hash = kHash;
    m.world_size = 2;
    m.format_version = 1;
    return m;
  }
  static v1::PutCheckpointRequest chunk(int64_t offset, std::string_view data) {
    v1::PutCheckpointRequest message;
    message.mutable_chunk()->set_offset(offset);
    message.mutable_chunk()->set_data(data.data(), data.size());
    message.mutable_chunk()->set_crc32c(crc32c(data));
    return message;
  }
  static v1::PutCheckpointRequest commit(int64_t step, std::string_view data) {
    v1::PutCheckpointRequest message;
    v1::CheckpointCommit* c = message.mutable_commit();
    c->set_run_id("run");
    c->set_step(step);
    c->set_generation(3);
    c->set_config_hash(kHash);
    c->set_world_size(2);
    c->set_format_version(1);
    c->set_size_bytes(static_cast<int64_t>(data.size()));
    c->set_crc32c(crc32c(data));
    return message;
  }
  // Sends `messages` on one PutCheckpoint stream and returns the status.
  grpc::Status put_raw(const std::vector<v1::PutCheckpointRequest>& messages,
                       bool writes_done = true) {
    auto c = context();
    v1::PutCheckpointResponse response;
    auto writer = stub_->PutCheckpoint(c.get(), &response);
    for (const auto& message : messages) {
      if (!writer->Write(message)) break;
    }
    if (writes_done) writer->WritesDone();
    return writer->Finish();
  }
  // The server still answers, and nothing but `steps` is committed, with no temporaries left.
  void expect_serving_with(const std::vector<int64_t>& steps, const std::string& what) {
    std::vector<int64_t> listed;
    for (const auto& m : client_->list_checkpoints("run")) listed.push_back(m.step);
    EXPECT_EQ(listed, steps) << what;
    // The handler drops its Upload before the status goes out, except after a cancel, where
    // the server notices a moment later.
    for (int i = 0; i < 200 && !listing(dir_.sub("state/tmp")).empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(listing(dir_.sub("state/tmp")).empty()) << what;
    EXPECT_EQ(client_->heartbeat({"run", 0, 3, 1}), 3) << what;
  }

  ScratchDir dir_;
  std::mutex log_mutex_;
  std::vector<std::string> log_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::unique_ptr<Client> client_;
};

TEST_F(ServerTest, ClientRoundTrip) {
  EXPECT_NE(server_->port(), 0);
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_FALSE(client_->get_checkpoint("run").has_value());
  // 5 MiB + 3 bytes: three chunks, more than one 4 MiB message.
  const std::string big = random_bytes((5 << 20) + 3, 11), small = random_bytes(100, 12);
  const CheckpointMeta committed = client_->put_checkpoint(big, meta(100));
  EXPECT_EQ(committed.size_bytes, static_cast<int64_t>(big.size()));
  EXPECT_EQ(committed.crc32c, crc32c(big));
  EXPECT_GT(committed.created_unix_ms, 0);
  client_->put_checkpoint(small, meta(200));
  auto newest = client_->get_checkpoint("run");
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->meta.step, 200);
  EXPECT_EQ(newest->data, small);
  auto at_100 = client_->get_checkpoint("run", 100);
  ASSERT_TRUE(at_100.has_value());
  EXPECT_EQ(at_100->data, big);
  EXPECT_EQ(at_100->meta.config_hash, kHash);
  EXPECT_FALSE(client_->get_checkpoint("run", 150).has_value());
  ASSERT_EQ(client_->list_checkpoints("run").size(), 2u);

  client_->heartbeat({"run", 1, 3, 200});
  client_->report_metrics({"run", 0, 3, 200, {{"loss", 0.25}}, 0});
  const auto status = client_->get_run_status("run");
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].generation, 3);
  ASSERT_EQ(status[0].ranks.size(), 2u);
  EXPECT_EQ(status[0].ranks[1].last_step, 200);
  EXPECT_EQ(status[0].ranks[1].host, "localhost");
  ASSERT_TRUE(status[0].newest_checkpoint.has_value());
  EXPECT_EQ(status[0].newest_checkpoint->step, 200);
  ASSERT_EQ(status[0].recent_metrics.size(), 1u);
  EXPECT_EQ(status[0].recent_metrics[0].values[0].second, 0.25);
  EXPECT_EQ(client_->get_run_status().size(), 1u);

  // A refused Join surfaces as ClientError with the code and the coordinator's message.
  JoinRequest other;
  other.run_id = "run";
  other.rank = 1;
  other.world_size = 2;
  other.generation = 3;
  other.config_yaml = "x: 1\n";
  other.config_hash = kOtherHash;
  try {
    client_->join(other);
    ADD_FAILURE() << "join with another config hash succeeded";
  } catch (const ClientError& e) {
    EXPECT_EQ(e.code(), Code::kFailedPrecondition);
    EXPECT_NE(std::string(e.what()).find("config hash"), std::string::npos) << e.what();
  }
}

TEST_F(ServerTest, CorruptCheckpointOnDiskIsSkippedWhenServed) {
  client_->put_checkpoint("previous checkpoint", meta(1));
  client_->put_checkpoint("newest checkpoint", meta(2));
  {
    std::fstream file(server_->state().store().checkpoint_path("run", 2),
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(3);
    file.put('X');
  }
  auto served = client_->get_checkpoint("run");
  ASSERT_TRUE(served.has_value());
  EXPECT_EQ(served->meta.step, 1);
  EXPECT_EQ(served->data, "previous checkpoint");
  EXPECT_FALSE(client_->get_checkpoint("run", 2).has_value());  // quarantined
}

TEST_F(ServerTest, HostileRequestsGetStatedStatusesAndTheServerKeepsServing) {
  const std::string data = random_bytes(3000, 13);
  const std::string_view a = std::string_view(data).substr(0, 1000);
  const std::string_view b = std::string_view(data).substr(1000);
  client_->put_checkpoint(data, meta(10));
  std::vector<int64_t> committed = {10};
  struct Case {
    std::string name;
    grpc::StatusCode expected;
    std::function<grpc::Status()> send;
  };
  std::vector<Case> cases;
  auto join_with = [&](auto&& change, const std::string& token = kToken) {
    return [this, change, token] {
      v1::JoinRequest request;
      request.set_run_id("run");
      request.set_rank(0);
      request.set_world_size(2);
      request.set_generation(3);
      request.set_config_yaml("model: {norm: syncbn}\n");
      request.set_config_hash(kHash);
      change(request);
      v1::JoinResponse response;
      return stub_->Join(context(token).get(), request, &response);
    };
  };
  cases.push_back(
      {"oversized message", grpc::StatusCode::RESOURCE_EXHAUSTED,
       join_with([](v1::JoinRequest& r) { r.set_config_yaml(std::string(5 << 20, 'y')); })});
  cases.push_back({"no token", grpc::StatusCode::UNAUTHENTICATED, join_with([](auto&) {}, "")});
  cases.push_back({"bad token", grpc::StatusCode::UNAUTHENTICATED,
                   join_with([](auto&) {}, "s3cret-token-0123456789abcdeX")});
  cases.push_back(
      {"token prefix", grpc::StatusCode::UNAUTHENTICATED, join_with([](auto&) {}, "s3cret-token")});
  cases.push_back({"run id with ../", grpc::StatusCode::INVALID_ARGUMENT,
                   join_with([](v1::JoinRequest& r) { r.set_run_id("../../etc"); })});
  cases.push_back({"run id ..", grpc::StatusCode::INVALID_ARGUMENT,
                   join_with([](v1::JoinRequest& r) { r.set_run_id(".."); })});
  cases.push_back({"negative world size", grpc::StatusCode::INVALID_ARGUMENT,
                   join_with([](v1::JoinRequest& r) { r.set_world_size(-2); })});
  cases.push_back({"stale generation join", grpc::StatusCode::FAILED_PRECONDITION,
                   join_with([](v1::JoinRequest& r) { r.set_generation(2); })});
  cases.push_back(
      {"other config", grpc::StatusCode::FAILED_PRECONDITION, join_with([](v1::JoinRequest& r) {
         r.set_config_yaml("x: 1\n");
         r.set_config_hash(fnv1a("x: 1\n"));
       })});
  cases.push_back({"config hash not of its YAML", grpc::StatusCode::INVALID_ARGUMENT,
                   join_with([](v1::JoinRequest& r) { r.set_config_hash(7); })});
  cases.push_back({"stale generation heartbeat", grpc::StatusCode::FAILED_PRECONDITION, [&] {
                     v1::HeartbeatRequest request;
                     request.set_run_id("run");
                     request.set_generation(1);
                     request.set_step(5);
                     v1::HeartbeatResponse response;
                     return stub_->Heartbeat(context().get(), request, &response);
                   }});
  cases.push_back({"expired deadline", grpc::StatusCode::DEADLINE_EXCEEDED, [&] {
                     auto c = context();
                     c->set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
                     v1::GetRunStatusRequest request;
                     v1::GetRunStatusResponse response;
                     return stub_->GetRunStatus(c.get(), request, &response);
                   }});
  cases.push_back({"get checkpoint run id with ../", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     v1::GetCheckpointRequest request;
                     request.set_run_id("run/../../x");
                     auto c = context();
                     auto reader = stub_->GetCheckpoint(c.get(), request);
                     v1::GetCheckpointResponse response;
                     while (reader->Read(&response)) {
                     }
                     return reader->Finish();
                   }});
  cases.push_back({"chunk gap", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     return put_raw({chunk(0, a), chunk(1001, b), commit(11, data)});
                   }});
  cases.push_back({"chunk overlap", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     return put_raw({chunk(0, a), chunk(999, b), commit(11, data)});
                   }});
  cases.push_back({"negative offset", grpc::StatusCode::INVALID_ARGUMENT,
                   [&] { return put_raw({chunk(-1000, a)}); }});
  cases.push_back({"chunk crc mismatch", grpc::StatusCode::DATA_LOSS, [&] {
                     auto bad = chunk(1000, b);
                     bad.mutable_chunk()->set_crc32c(bad.chunk().crc32c() ^ 0x10);
                     return put_raw({chunk(0, a), bad, commit(11, data)});
                   }});
  cases.push_back({"whole checksum mismatch", grpc::StatusCode::DATA_LOSS, [&] {
                     auto c = commit(11, data);
                     c.mutable_commit()->set_crc32c(c.commit().crc32c() + 1);
                     return put_raw({chunk(0, a), chunk(1000, b), c});
                   }});
  cases.push_back({"stream ended early", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     return put_raw({chunk(0, a), chunk(1000, b)});
                   }});
  cases.push_back({"data missing before commit", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     return put_raw({chunk(0, a), commit(11, data)});
                   }});
  cases.push_back(
      {"message after commit", grpc::StatusCode::INVALID_ARGUMENT, [&] {
         return put_raw({chunk(0, a), chunk(1000, b), commit(11, data), chunk(3000, a)});
       }});
  cases.push_back({"negative size", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     auto c = commit(11, data);
                     c.mutable_commit()->set_size_bytes(-3000);
                     return put_raw({chunk(0, a), chunk(1000, b), c});
                   }});
  cases.push_back({"huge size", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     auto c = commit(11, data);
                     c.mutable_commit()->set_size_bytes(int64_t{1} << 62);
                     return put_raw({chunk(0, a), chunk(1000, b), c});
                   }});
  cases.push_back({"huge step", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     auto c = commit(11, data);
                     c.mutable_commit()->set_step(int64_t{1} << 60);
                     return put_raw({chunk(0, a), chunk(1000, b), c});
                   }});
  cases.push_back({"checkpoint run id with ../", grpc::StatusCode::INVALID_ARGUMENT, [&] {
                     auto c = commit(11, data);
                     c.mutable_commit()->set_run_id("../run");
                     return put_raw({chunk(0, a), chunk(1000, b), c});
                   }});
  cases.push_back({"stale generation checkpoint", grpc::StatusCode::FAILED_PRECONDITION, [&] {
                     auto c = commit(11, data);
                     c.mutable_commit()->set_generation(2);
                     return put_raw({chunk(0, a), chunk(1000, b), c});
                   }});
  cases.push_back({"duplicate step", grpc::StatusCode::ALREADY_EXISTS, [&] {
                     return put_raw({chunk(0, a), chunk(1000, b), commit(10, data)});
                   }});
  cases.push_back({"empty message", grpc::StatusCode::INVALID_ARGUMENT,
                   [&] { return put_raw({v1::PutCheckpointRequest()}); }});
  cases.push_back({"checkpoint without token", grpc::StatusCode::UNAUTHENTICATED, [&] {
                     auto c = context("");
                     v1::PutCheckpointResponse response;
                     auto writer = stub_->PutCheckpoint(c.get(), &response);
                     writer->Write(chunk(0, a));
                     writer->Write(chunk(1000, b));
                     writer->Write(commit(11, data));
                     writer->WritesDone();
                     return writer->Finish();
                   }});
  cases.push_back({"cancelled mid-stream", grpc::StatusCode::CANCELLED, [&] {
                     auto c = context();
                     v1::PutCheckpointResponse response;
                     auto writer = stub_->PutCheckpoint(c.get(), &response);
                     writer->Write(chunk(0, a));
                     c->TryCancel();
                     return writer->Finish();
                   }});
  for (const Case& c : cases) {
    const grpc::Status status = c.send();
    EXPECT_EQ(status.error_code(), c.expected)
        << c.name << ": got " << status.error_code() << " " << status.error_message();
    EXPECT_FALSE(status.error_message().empty()) << c.name;
    expect_serving_with(committed, c.name);
  }
  // After all that, a well-formed upload of the same step still commits.
  EXPECT_TRUE(put_raw({chunk(0, a), chunk(1000, b), commit(11, data)}).ok());
  expect_serving_with({11, 10}, "final");
}

TEST_F(ServerTest, ConcurrentClientsOfSeveralRuns) {
  constexpr int kThreads = 4, kSteps = 5;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        Client client(client_options());
        const std::string run_id = "run" + std::to_string(t);
        JoinRequest join;
        join.run_id = run_id;
        join.world_size = 1;
        join.generation = 1;
        join.config_yaml = kYaml;
        join.config_hash = kHash;
        join.keep_last = 2;
        client.join(join);
        for (int step = 1; step <= kSteps; ++step) {
          CheckpointMeta m = meta(step, 1);
          m.run_id = run_id;
          m.world_size = 1;
          const std::string data = random_bytes(100000 + step, t * 100 + step);
          client.put_checkpoint(data, m);
          client.heartbeat({run_id, 0, 1, step});
          if (client.get_checkpoint(run_id)->data != data) ++failures;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    const auto list = client_->list_checkpoints("run" + std::to_string(t));
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].step, kSteps);
  }
  EXPECT_EQ(client_->get_run_status().size(), kThreads + 1u);
  EXPECT_TRUE(listing(dir_.sub("state/tmp")).empty());
}

TEST_F(ServerTest, HealthCheckNeedsNoToken) {
  grpc::TemplatedGenericStub<grpc::ByteBuffer, grpc::ByteBuffer> generic(channel_);
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest{service: ""} is empty on the wire (a buffer of one empty slice).
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&c, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) { done.set_value(s); });
  const grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

TEST_F(ServerTest, SecondCoordinatorOnTheSamePortFailsToStart) {
  ServerOptions options;
  options.listen = server_->address();
  options.state_dir = dir_.sub("state2");
  options.log = [](const std::string&) {};
  try {
    CoordinatorServer second(options);
    ADD_FAILURE() << "a second coordinator started on " << server_->address();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on '" + server_->address() + "'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(client_->heartbeat({"run", 0, 3, 1}), 3);
}

TEST(ServerOptionsTest, NonLoopbackNeedsAPrivateTokenFile) {
  ScratchDir dir;
  EXPECT_TRUE(is_loopback_listen_address("127.0.0.1:0"));
  EXPECT_TRUE(is_loopback_listen_address("127.1.2.3:80"));
  EXPECT_TRUE(is_loopback_listen_address("localhost:5000"));
  EXPECT_TRUE(is_loopback_listen_address("[::1]:5000"));
  EXPECT_TRUE(is_loopback_listen_address("unix:/tmp/sock"));
  EXPECT_FALSE(is_loopback_listen_address("0.0.0.0:5000"));
  EXPECT_FALSE(is_loopback_listen_address("[::]:5000"));
  EXPECT_FALSE(is_loopback_listen_address("10.0.0.1:5000"));
  EXPECT_FALSE(is_loopback_listen_address("127.0.0.1.example.com:5000"));
  EXPECT_FALSE(is_loopback_listen_address("node7:5000"));
  ServerOptions options;
  options.listen = "0.0.0.0:0";
  options.state_dir = dir.sub("state");
  options.log = [](const std::string&) {};
  auto start_error = [&] {
    try {
      CoordinatorServer server(options);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(start_error().find("requires --token-file"), std::string::npos) << start_error();
  write_token_file(dir.sub("token"), kToken, 0644);
  options.token_file = dir.sub("token");
  EXPECT_NE(start_error().find("has mode 0644"), std::string::npos) << start_error();
  write_token_file(dir.sub("short"), "short", 0600);
  options.token_file = dir.sub("short");
  EXPECT_NE(start_error().find("16 to 4096"), std::string::npos) << start_error();
  ::chmod(dir.sub("token").c_str(), 0600);
  options.token_file = dir.sub("token");
  EXPECT_EQ(start_error(), "");
  // No error message ever holds the token.
  write_token_file(dir.sub("spaced"), std::string(kToken) + " x", 0600);
  options.token_file = dir.sub("spaced");
  EXPECT_EQ(start_error().find(kToken), std::string::npos);
}

TEST(ClientRetryTest, GivesUpAfterTheUnavailableLimitWithAClearMessage) {
  ClientOptions options;
  options.address = "127.0.0.1:1";  // nothing listens on port 1
  options.unavailable_limit = std::chrono::milliseconds(600);
  options.initial_backoff = std::chrono::milliseconds(50);
  options.max_backoff = std::chrono::milliseconds(200);
  Client client(options);
  const auto start = std::chrono::steady_clock::now();
  try {
    client.heartbeat({"run", 0, 0, 0});
    ADD_FAILURE() << "heartbeat to nowhere succeeded";
  } catch (const ClientError& e) {
    EXPECT_EQ(e.code(), Code::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:1 has been unreachable"), std::string::npos)
        << e.what();
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(300));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

TEST(ClientRetryTest, RetriesUntilTheCoordinatorComesUp) {
  ScratchDir dir;
  ServerOptions options;
  options.state_dir = dir.sub("state");
  options.log = [](const std::string&) {};
  int port = 0;
  {
    CoordinatorServer probe(options);  // finds a free port, then frees it
    port = probe.port();
  }
  options.listen = "127.0.0.1:" + std::to_string(port);
  std::unique_ptr<CoordinatorServer> late;
  std::thread starter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    late = std::make_unique<CoordinatorServer>(options);
  });
  ClientOptions client_options;
  client_options.address = options.listen;
  client_options.unavailable_limit = std::chrono::seconds(10);
  client_options.initial_backoff = std::chrono::milliseconds(50);
  client_options.max_backoff = std::chrono::milliseconds(200);
  Client client(client_options);
  EXPECT_TRUE(client.get_run_status().empty());
  starter.join();
}

// TLS and client certificates, with a throwaway CA made by the openssl CLI.
class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl";
    std::ofstream(dir_.sub("san.ext")) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    const std::string d = dir_.path();
    const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    const std::string script =
        "cd " + d + " && openssl req -x509" + key +
        "-keyout ca.key -out ca.pem -days 1 -subj /CN=syncbn-test-ca && "
        "openssl req" +
        key +
        "-keyout server.key -out server.csr -subj /CN=localhost && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 1 -extfile san.ext && "
        "openssl req" +
        key +
        "-keyout client.key -out client.csr -subj /CN=rank && "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 1";
    ASSERT_EQ(std::system(("(" + script + ") >/dev/null 2>&1").c_str()), 0) << script;
  }
  std::unique_ptr<CoordinatorServer> start(bool client_ca) {
    ServerOptions options;
    options.state_dir = dir_.sub(client_ca ? "state-mtls" : "state-tls");
    options.tls_cert_file = dir_.sub("server.pem");
    options.tls_key_file = dir_.sub("server.key");
    if (client_ca) options.tls_client_ca_file = dir_.sub("ca.pem");
    options.log = [](const std::string&) {};
    return std::make_unique<CoordinatorServer>(options);
  }
  Code status_code(const std::string& address, bool tls, bool client_cert) {
    ClientOptions options;
    options.address = address;
    options.unavailable_limit = std::chrono::milliseconds(500);
    options.initial_backoff = std::chrono::milliseconds(50);
    if (tls) options.tls_root_certs_file = dir_.sub("ca.pem");
    if (client_cert) {
      options.tls_cert_file = dir_.sub("client.pem");
      options.tls_key_file = dir_.sub("client.key");
    }
    try {
      Client(options).get_run_status();
      return Code::kOk;
    } catch (const ClientError& e) {
      return e.code();
    }
  }
  ScratchDir dir_;
};

TEST_F(TlsTest, ServesTlsAndRequiresClientCertificatesWhenAsked) {
  auto tls = start(false);
  EXPECT_EQ(status_code(tls->address(), true, false), Code::kOk);
  EXPECT_EQ(status_code(tls->address(), false, false), Code::kUnavailable);  // plaintext
  auto mtls = start(true);
  EXPECT_EQ(status_code(mtls->address(), true, true), Code::kOk);
  EXPECT_EQ(status_code(mtls->address(), true, false), Code::kUnavailable);
}

}  // namespace
}  // namespace syncbn::coordinator
