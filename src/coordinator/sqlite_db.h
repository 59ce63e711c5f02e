// RAII over SQLite: one connection (Database) and its prepared statements (Statement). Every
// failure throws ServiceError(kInternal) naming the database file and SQLite's message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace syncbn::coordinator {

class Database {
 public:
  // Opens (creating) `path` in WAL mode with synchronous=FULL: a committed transaction is on
  // disk when commit returns.
  explicit Database(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  void exec(const std::string& sql);  // one or more statements without results
  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }
  [[noreturn]] void fail(const std::string& what) const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// A prepared statement; bind with 1-based indices, step() until it returns false.
class Statement {
 public:
  Statement(const Database& db, const std::string& sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, int64_t value);
  Statement& bind(int index, std::string_view value);
  // True while there is a row; false when done. Throws on error.
  bool step();
  void run() {
    while (step()) {
    }
  }
  int64_t column_int(int index) const;  // 0-based, like sqlite3_column_*
  std::string column_text(int index) const;

 private:
  const Database& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT; rolled back when destroyed without commit().
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace syncbn::coordinator
