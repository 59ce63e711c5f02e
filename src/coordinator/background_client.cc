#include "coordinator/background_client.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "coordinator/crc32c.h"
#include "coordinator/spill_dir.h"

namespace syncbn::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

// Failures that say nothing about this rank, only that the coordinator cannot answer now (a
// restarted coordinator that lost its state answers NOT_FOUND for the run).
bool is_transient(Code code) {
  return code == Code::kUnavailable || code == Code::kDeadlineExceeded || code == Code::kNotFound ||
         code == Code::kCancelled || code == Code::kInternal;
}

}  // namespace

struct BackgroundClient::Impl {
  BackgroundOptions options;
  std::unique_ptr<Client> client;
  std::optional<SpillDir> spill;

  std::mutex mutex;
  std::condition_variable wake;     // to the thread: work arrived, finish or stop
  std::condition_variable written;  // from the thread: a checkpoint reached the disk, or done
  std::atomic<int64_t> step{0};
  std::atomic<int64_t> activity{0};
  std::deque<MetricsReport> metrics;
  int64_t dropped_metrics = 0;
  std::deque<std::pair<int64_t, std::string>> to_write;  // checkpoints not yet on disk
  std::set<std::string> rejected;                        // spill files the coordinator refused
  bool stopping = false;
  std::optional<Clock::time_point> finishing_since;
  bool finished = false;
  bool poke = false;  // finish() was called
  std::atomic<bool> reachable{true};
  Clock::time_point down_since;
  Clock::time_point next_attempt;
  Clock::time_point last_heartbeat;  // the thread's
  std::atomic<bool> force_heartbeat{false};
  std::chrono::milliseconds backoff{100};
  std::atomic<bool> failed{false};
  std::string failure;  // what check() throws
  Code failure_code = Code::kUnknown;
  std::thread thread;

  void log(const std::string& line) const {
    if (options.log) options.log(line);
  }

  void fail_for_good(Code code, const std::string& message) {
    std::lock_guard lock(mutex);
    if (failed) return;
    failure = message;
    failure_code = code;
    failed = true;
  }

  // Sends a heartbeat when due, then the queued metrics, then the spilled checkpoints, oldest
  // first. Returns false when the coordinator did not answer (the caller backs off).
  bool attempt() {
    try {
      if (force_heartbeat.exchange(false) ||
          Clock::now() - last_heartbeat >= options.heartbeat_interval) {
        client->heartbeat(
            {options.run_id, options.rank, options.generation, step.load(), activity.load()});
        last_heartbeat = Clock::now();
      }
      for (;;) {
        MetricsReport report;
        {
          std::lock_guard lock(mutex);
          if (metrics.empty()) break;
          report = metrics.front();
        }
        try {
          client->report_metrics(report);
        } catch (const ClientError& e) {
          if (is_transient(e.code()) || e.code() == Code::kFailedPrecondition) throw;
          log(str_cat("metrics of step ", report.step, " refused, dropped: ", e.what()));
        }
        std::lock_guard lock(mutex);
        if (!metrics.empty()) metrics.pop_front();
      }
      if (spill) upload_spilled();
      return true;
    } catch (const ClientError& e) {
      if (is_transient(e.code())) {
        if (reachable) {
          reachable = false;
          down_since = Clock::now();
          log(str_cat("the coordinator at ", options.client.address, " is unreachable (", e.what(),
                      "); training goes on",
                      spill ? str_cat(", checkpoints are kept in ", spill->dir()) : ""));
        }
        return false;
      }
      fail_for_good(e.code(), e.what());
      return true;
    }
  }

  void upload_spilled() {
    for (const SpillDir::Entry& entry : spill->list()) {
      {
        std::lock_guard lock(mutex);
        if (rejected.count(entry.path)) continue;
      }
      std::string problem;
      const std::optional<std::string> data = spill->read(entry, &problem);
      if (!data) {
        log(str_cat("not uploading checkpoint step ", entry.step, ": ", problem));
        std::lock_guard lock(mutex);
        rejected.insert(entry.path);
        continue;
      }
      CheckpointMeta meta = options.checkpoint_meta;
      meta.run_id = options.run_id;
      meta.generation = options.generation;
      meta.step = entry.step;
      try {
        client->put_checkpoint(*data, meta);
      } catch (const ClientError& e) {
        if (is_transient(e.code()) || e.code() == Code::kFailedPrecondition) throw;
        if (e.code() != Code::kAlreadyExists || !already_committed(entry)) {
          log(str_cat("checkpoint step ", entry.step, " refused by the coordinator, kept in ",
                      entry.path, ": ", e.what()));
          std::lock_guard lock(mutex);
          rejected.insert(entry.path);
          continue;
        }
      }
      spill->remove(entry);
      ++activity;  // an upload at the end of the run is the run's progress
    }
  }

  bool already_committed(const SpillDir::Entry& entry) {
    for (const CheckpointMeta& c : client->list_checkpoints(options.run_id))
      if (c.step == entry.step && c.crc32c == entry.crc32c) return true;
    return false;
  }

  // Whether everything has been sent (the caller holds the mutex).
  bool idle() const {
    if (!to_write.empty() || !metrics.empty()) return false;
    if (!spill) return true;
    for (const SpillDir::Entry& e : spill->list())
      if (!rejected.count(e.path)) return false;
    return true;
  }

  void run() {
    std::unique_lock lock(mutex);
    for (;;) {
      while (!to_write.empty()) {
        std::pair<int64_t, std::string> checkpoint = std::move(to_write.front());
        lock.unlock();
        try {
          spill->save(checkpoint.first, checkpoint.second);
        } catch (const Error& e) {
          fail_for_good(Code::kInternal, str_cat("checkpoint step ", checkpoint.first,
                                                 " could not be kept on disk: ", e.what()));
        }
        lock.lock();
        to_write.pop_front();
        written.notify_all();
      }
      if (stopping) return;
      if (!failed && Clock::now() >= next_attempt) {
        const bool was_reachable = reachable;
        lock.unlock();
        const bool answered = attempt();
        lock.lock();
        if (answered) {
          if (!was_reachable && !failed) {
            const double down_s = std::chrono::duration<double>(Clock::now() - down_since).count();
            log(str_cat("the coordinator at ", options.client.address, " is back after ",
                        static_cast<int64_t>(down_s + 0.5), " s; sending what was kept"));
          }
          reachable = true;
          backoff = std::chrono::milliseconds(100);
          next_attempt = idle() ? last_heartbeat + options.heartbeat_interval : Clock::now();
        } else {
          next_attempt = Clock::now() + backoff;
          backoff = std::min(backoff * 2, options.max_retry_backoff);
        }
      }
      if (finishing_since) {
        const bool gave_up = !reachable && Clock::now() - *finishing_since >= finish_wait;
        if (failed || gave_up || (reachable && idle())) {
          finished = true;
          written.notify_all();
          return;
        }
      }
      poke = false;
      const Clock::time_point until = failed ? Clock::now() + std::chrono::hours(1) : next_attempt;
      wake.wait_until(lock, until, [&] { return stopping || poke || !to_write.empty(); });
    }
  }

  std::chrono::milliseconds finish_wait{0};
};

BackgroundClient::BackgroundClient(BackgroundOptions options) : impl_(std::make_unique<Impl>()) {
  ClientOptions client = options.client;
  client.unavailable_limit = std::chrono::milliseconds(0);  // this class retries, not the Client
  client.call_timeout = std::min(client.call_timeout, std::chrono::milliseconds(5000));
  // Reconnect soon after the coordinator is back (gRPC's own reconnect backoff).
  client.initial_backoff = std::chrono::milliseconds(100);
  client.max_backoff = std::max(client.initial_backoff, options.max_retry_backoff);
  impl_->client = std::make_unique<Client>(client);
  if (!options.spill_dir.empty()) impl_->spill.emplace(options.spill_dir, options.keep_last);
  impl_->options = std::move(options);
  impl_->last_heartbeat = Clock::now() - impl_->options.heartbeat_interval;
  impl_->next_attempt = Clock::now();
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

BackgroundClient::~BackgroundClient() {
  if (!impl_->thread.joinable()) return;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

const std::string& BackgroundClient::spill_dir() const { return impl_->options.spill_dir; }

void BackgroundClient::progress(int64_t step) {
  impl_->step.store(step);
  ++impl_->activity;
}

void BackgroundClient::touch() { ++impl_->activity; }

void BackgroundClient::report_metrics(MetricsReport report) {
  report.run_id = impl_->options.run_id;
  report.rank = impl_->options.rank;
  report.generation = impl_->options.generation;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->metrics.push_back(std::move(report));
    while (impl_->metrics.size() > impl_->options.max_queued_metrics) {
      impl_->metrics.pop_front();
      ++impl_->dropped_metrics;
    }
  }
  impl_->wake.notify_all();
}

void BackgroundClient::put_checkpoint(int64_t step, std::string data) {
  SYNCBN_CHECK(impl_->spill.has_value());
  std::unique_lock lock(impl_->mutex);
  impl_->written.wait(lock, [&] { return impl_->to_write.size() < 2 || impl_->finished; });
  impl_->to_write.emplace_back(step, std::move(data));
  lock.unlock();
  impl_->wake.notify_all();
}

void BackgroundClient::check() const {
  if (!impl_->failed.load()) return;
  std::lock_guard lock(impl_->mutex);
  throw ClientError(impl_->failure_code, impl_->failure);
}

BackgroundClient::Summary BackgroundClient::finish(std::chrono::milliseconds wait_unreachable) {
  Summary summary;
  {
    std::unique_lock lock(impl_->mutex);
    impl_->finish_wait = wait_unreachable;
    impl_->finishing_since = Clock::now();
    impl_->next_attempt = Clock::now();
    impl_->force_heartbeat = true;  // with the last step
    impl_->poke = true;
    impl_->wake.notify_all();
    impl_->written.wait(lock, [&] { return impl_->finished; });
    summary.coordinator_reachable = impl_->reachable;
    summary.dropped_metrics = impl_->dropped_metrics;
    summary.drained = impl_->reachable && !impl_->failed && impl_->idle();
    if (impl_->spill)
      for (const SpillDir::Entry& e : impl_->spill->list()) summary.spilled_steps.push_back(e.step);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
  return summary;
}

}  // namespace syncbn::coordinator
