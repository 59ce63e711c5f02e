#include "coordinator/proto_convert.h"

namespace syncbn::coordinator {

// The one mapping between the coordinator's codes and gRPC's (they share numbering and names;
// the switch keeps that an explicit, checked fact rather than a cast).
grpc::StatusCode to_grpc_code(Code code) {
  switch (code) {
    case Code::kOk:
      return grpc::StatusCode::OK;
    case Code::kCancelled:
      return grpc::StatusCode::CANCELLED;
    case Code::kUnknown:
      return grpc::StatusCode::UNKNOWN;
    case Code::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::kDeadlineExceeded:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Code::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case Code::kAlreadyExists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case Code::kPermissionDenied:
      return grpc::StatusCode::PERMISSION_DENIED;
    case Code::kResourceExhausted:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Code::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Code::kAborted:
      return grpc::StatusCode::ABORTED;
    case Code::kOutOfRange:
      return grpc::StatusCode::OUT_OF_RANGE;
    case Code::kUnimplemented:
      return grpc::StatusCode::UNIMPLEMENTED;
    case Code::kInternal:
      return grpc::StatusCode::INTERNAL;
    case Code::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    case Code::kDataLoss:
      return grpc::StatusCode::DATA_LOSS;
    case Code::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
  }
  return grpc::StatusCode::UNKNOWN;
}

Code from_grpc_code(grpc::StatusCode code) {
  for (const Code c : {Code::kOk, Code::kCancelled, Code::kUnknown, Code::kInvalidArgument,
                       Code::kDeadlineExceeded, Code::kNotFound, Code::kAlreadyExists,
                       Code::kPermissionDenied, Code::kResourceExhausted, Code::kFailedPrecondition,
                       Code::kAborted, Code::kOutOfRange, Code::kUnimplemented, Code::kInternal,
                       Code::kUnavailable, Code::kDataLoss, Code::kUnauthenticated}) {
    if (to_grpc_code(c) == code) return c;
  }
  return Code::kUnknown;
}

void to_proto(const CheckpointMeta& meta, v1::CheckpointInfo* info) {
  info->set_run_id(meta.run_id);
  info->set_step(meta.step);
  info->set_generation(meta.generation);
  info->set_config_hash(meta.config_hash);
  info->set_world_size(meta.world_size);
  info->set_format_version(meta.format_version);
  info->set_size_bytes(meta.size_bytes);
  info->set_crc32c(meta.crc32c);
  info->set_created_unix_ms(meta.created_unix_ms);
}

CheckpointMeta from_proto(const v1::CheckpointInfo& info) {
  CheckpointMeta meta;
  meta.run_id = info.run_id();
  meta.step = info.step();
  meta.generation = info.generation();
  meta.config_hash = info.config_hash();
  meta.world_size = info.world_size();
  meta.format_version = info.format_version();
  meta.size_bytes = info.size_bytes();
  meta.crc32c = info.crc32c();
  meta.created_unix_ms = info.created_unix_ms();
  return meta;
}

CheckpointMeta from_proto(const v1::CheckpointCommit& commit) {
  CheckpointMeta meta;
  meta.run_id = commit.run_id();
  meta.step = commit.step();
  meta.generation = commit.generation();
  meta.config_hash = commit.config_hash();
  meta.world_size = commit.world_size();
  meta.format_version = commit.format_version();
  meta.size_bytes = commit.size_bytes();
  meta.crc32c = commit.crc32c();
  return meta;
}

void to_proto(const JoinRequest& request, v1::JoinRequest* out) {
  out->set_run_id(request.run_id);
  out->set_rank(request.rank);
  out->set_world_size(request.world_size);
  out->set_generation(request.generation);
  out->set_host(request.host);
  out->set_pid(request.pid);
  out->set_config_yaml(request.config_yaml);
  out->set_config_hash(request.config_hash);
  out->set_keep_last(request.keep_last);
}

JoinRequest from_proto(const v1::JoinRequest& request) {
  JoinRequest out;
  out.run_id = request.run_id();
  out.rank = request.rank();
  out.world_size = request.world_size();
  out.generation = request.generation();
  out.host = request.host();
  out.pid = request.pid();
  out.config_yaml = request.config_yaml();
  out.config_hash = request.config_hash();
  out.keep_last = request.keep_last();
  return out;
}

void to_proto(const JoinReply& reply, v1::JoinResponse* out) {
  out->set_config_yaml(reply.config_yaml);
  out->set_config_hash(reply.config_hash);
  out->set_generation(reply.generation);
  out->set_world_size(reply.world_size);
  out->set_keep_last(reply.keep_last);
  if (reply.newest_checkpoint) to_proto(*reply.newest_checkpoint, out->mutable_newest_checkpoint());
}

JoinReply from_proto(const v1::JoinResponse& reply) {
  JoinReply out;
  out.config_yaml = reply.config_yaml();
  out.config_hash = reply.config_hash();
  out.generation = reply.generation();
  out.world_size = reply.world_size();
  out.keep_last = reply.keep_last();
  if (reply.has_newest_checkpoint()) out.newest_checkpoint = from_proto(reply.newest_checkpoint());
  return out;
}

void to_proto(const RunStatus& status, v1::RunStatus* out) {
  out->set_run_id(status.run_id);
  out->set_generation(status.generation);
  out->set_world_size(status.world_size);
  out->set_config_hash(status.config_hash);
  out->set_keep_last(status.keep_last);
  for (const RankStatus& rank : status.ranks) {
    v1::RankStatus* r = out->add_ranks();
    r->set_rank(rank.rank);
    r->set_host(rank.host);
    r->set_pid(rank.pid);
    r->set_generation(rank.generation);
    r->set_joined_unix_ms(rank.joined_unix_ms);
    r->set_last_heartbeat_unix_ms(rank.last_heartbeat_unix_ms);
    r->set_heartbeat_age_ms(rank.heartbeat_age_ms);
    r->set_last_step(rank.last_step);
    r->set_progress_age_ms(rank.progress_age_ms);
  }
  if (status.newest_checkpoint) {
    to_proto(*status.newest_checkpoint, out->mutable_newest_checkpoint());
  }
  out->set_checkpoint_count(status.checkpoint_count);
  for (const MetricsReport& report : status.recent_metrics) {
    v1::MetricsReport* m = out->add_recent_metrics();
    m->set_rank(report.rank);
    m->set_generation(report.generation);
    m->set_step(report.step);
    m->set_received_unix_ms(report.received_unix_ms);
    for (const auto& [name, value] : report.values) {
      v1::Metric* metric = m->add_metrics();
      metric->set_name(name);
      metric->set_value(value);
    }
  }
}

RunStatus from_proto(const v1::RunStatus& status) {
  RunStatus out;
  out.run_id = status.run_id();
  out.generation = status.generation();
  out.world_size = status.world_size();
  out.config_hash = status.config_hash();
  out.keep_last = status.keep_last();
  for (const v1::RankStatus& r : status.ranks()) {
    RankStatus rank;
    rank.rank = r.rank();
    rank.host = r.host();
    rank.pid = r.pid();
    rank.generation = r.generation();
    rank.joined_unix_ms = r.joined_unix_ms();
    rank.last_heartbeat_unix_ms = r.last_heartbeat_unix_ms();
    rank.heartbeat_age_ms = r.heartbeat_age_ms();
    rank.last_step = r.last_step();
    rank.progress_age_ms = r.progress_age_ms();
    out.ranks.push_back(std::move(rank));
  }
  if (status.has_newest_checkpoint())
    out.newest_checkpoint = from_proto(status.newest_checkpoint());
  out.checkpoint_count = status.checkpoint_count();
  for (const v1::MetricsReport& m : status.recent_metrics()) {
    MetricsReport report;
    report.run_id = status.run_id();
    report.rank = m.rank();
    report.generation = m.generation();
    report.step = m.step();
    report.received_unix_ms = m.received_unix_ms();
    for (const v1::Metric& metric : m.metrics()) {
      report.values.emplace_back(metric.name(), metric.value());
    }
    out.recent_metrics.push_back(std::move(report));
  }
  return out;
}

}  // namespace syncbn::coordinator
