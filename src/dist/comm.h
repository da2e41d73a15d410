// Collective communication between the processes of one run: the narrow interface that expert
// parallelism needs, implemented over MPI (OpenMPI from the distribution) and, for a plain run,
// by a one-process communicator that copies. A NCCL implementation plugs in beside the CUDA
// backend with the same five operations.
//
// A run is multi-process when it was started by an MPI launcher (mpirun / mpiexec / srun set the
// PMIx or OMPI environment); `moe` then calls comm_init, every command sees comm_world(), and
// ranks other than 0 send their standard output to /dev/null so that rank 0 prints what one
// process prints. Errors are fatal to the whole job: a rank that dies makes mpirun end the
// others (a failed MPI call aborts with a message naming the rank).
//
// Buffers are packed in rank order: the bytes for (or from) rank r start after those of ranks
// 0..r-1. Counts are in bytes (alltoallv, allgatherv, broadcast) or elements (allreduce).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace moe {

enum class ReduceType { F32, F64, I32, I64 };
enum class ReduceOp { SUM, MAX, MIN };

// A pending non-blocking operation; wait() completes it (the destructor waits too).
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // send_bytes[r] bytes from send go to rank r; recv_bytes[r] bytes from rank r land in recv.
  // send_bytes (size()), recv_bytes (size()).
  virtual void alltoallv(const void* send, const int64_t* send_bytes, void* recv,
                         const int64_t* recv_bytes) = 0;
  // The same, posted without waiting (MPI_Ialltoallv): the buffers and counts must stay valid
  // and unchanged until the request is waited for.
  virtual std::unique_ptr<CommRequest> ialltoallv(const void* send, const int64_t* send_bytes,
                                                  void* recv, const int64_t* recv_bytes) = 0;
  // recv = every rank's `bytes` bytes from send, in rank order; recv_bytes (size()) gives each
  // rank's count (recv_bytes[rank()] == bytes). send may already sit at its place in recv.
  virtual void allgatherv(const void* send, int64_t bytes, void* recv,
                          const int64_t* recv_bytes) = 0;
  // buf (n elements of type t) = op over the ranks' buf, on every rank.
  virtual void allreduce(void* buf, int64_t n, ReduceType t, ReduceOp op) = 0;
  virtual void broadcast(void* buf, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // The ranks of the same color, ordered by key, as a new communicator.
  virtual std::unique_ptr<Comm> split(int color, int key) const = 0;
};

// Starts MPI when the process was started by an MPI launcher; a no-op otherwise. Ranks other
// than 0 then print nothing on standard output. Call once, first thing in main.
void comm_init(int* argc, char*** argv);
// Ends MPI (after a barrier) if comm_init started it.
void comm_finalize();
// Aborts every rank of the job with exit code `code` (MPI_Abort); a plain exit in one process.
[[noreturn]] void comm_abort(int code);
// The communicator of every process of the run (a one-process one without a launcher).
Comm& comm_world();
// The expert-parallel group of this process: all of comm_world() unless comm_set_ep_size chose
// smaller groups, consecutive ranks of ep_size each, with data parallelism across them.
Comm& comm_ep();
// The ranks that hold the same experts as this one (rank i of every expert-parallel group).
Comm& comm_dp();
// Splits the world into expert-parallel groups of n ranks (n must divide the world's size);
// n = 0: one group of every rank. Call before any MoE layer is set up.
void comm_set_ep_size(int n);
// A one-process communicator (tests, and the plain run).
std::unique_ptr<Comm> comm_self();
// True when comm_init found an MPI launcher.
bool comm_is_mpi();

// Convenience: sum / max of one value over the ranks.
double comm_sum(Comm& c, double v);
int64_t comm_sum(Comm& c, int64_t v);
double comm_max(Comm& c, double v);

// Checks that every rank holds the same `what` (a description of the model, config and flags);
// fails on every rank with a message naming the first rank that differs.
void comm_check_same(Comm& c, const std::string& what, const char* label);

}  // namespace moe
