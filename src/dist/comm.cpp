#include "dist/comm.h"

#include <fcntl.h>
#define OMPI_SKIP_MPICXX 1  // the C API only
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"

namespace moe {

namespace {

// ---- one process ----------------------------------------------------------------------------

class DoneRequest final : public CommRequest {
 public:
  void wait() override {}
};

class SelfComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void alltoallv(const void* send, const int64_t* send_bytes, void* recv,
                 const int64_t* recv_bytes) override {
    MOE_CHECK(send_bytes[0] == recv_bytes[0]);
    if (send_bytes[0] > 0 && send != recv) std::memmove(recv, send, send_bytes[0]);
  }
  std::unique_ptr<CommRequest> ialltoallv(const void* send, const int64_t* send_bytes, void* recv,
                                          const int64_t* recv_bytes) override {
    alltoallv(send, send_bytes, recv, recv_bytes);
    return std::make_unique<DoneRequest>();
  }
  void allgatherv(const void* send, int64_t bytes, void* recv,
                  const int64_t* recv_bytes) override {
    MOE_CHECK(recv_bytes[0] == bytes);
    if (bytes > 0 && send != recv) std::memmove(recv, send, bytes);
  }
  void allreduce(void*, int64_t, ReduceType, ReduceOp) override {}
  void broadcast(void*, int64_t, int root) override { MOE_CHECK(root == 0); }
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) const override { return std::make_unique<SelfComm>(); }
};

// ---- MPI ------------------------------------------------------------------------------------

bool g_mpi = false;

int to_int(int64_t n, const char* what) {
  if (n < 0 || n > std::numeric_limits<int>::max())
    fail("MPI %s: %lld bytes for one rank exceed MPI's int count", what,
         static_cast<long long>(n));
  return static_cast<int>(n);
}

// Counts and displacements of a packed rank-ordered buffer, as MPI's ints.
void counts_displs(const int64_t* bytes, int n, std::vector<int>* cnt, std::vector<int>* dsp,
                   const char* what) {
  cnt->resize(n);
  dsp->resize(n);
  int64_t off = 0;
  for (int r = 0; r < n; ++r) {
    (*cnt)[r] = to_int(bytes[r], what);
    (*dsp)[r] = to_int(off, what);
    off += bytes[r];
  }
}

MPI_Datatype mpi_type(ReduceType t) {
  switch (t) {
    case ReduceType::F32: return MPI_FLOAT;
    case ReduceType::F64: return MPI_DOUBLE;
    case ReduceType::I32: return MPI_INT32_T;
    case ReduceType::I64: return MPI_INT64_T;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::SUM: return MPI_SUM;
    case ReduceOp::MAX: return MPI_MAX;
    case ReduceOp::MIN: return MPI_MIN;
  }
  return MPI_SUM;
}

class MpiRequest final : public CommRequest {
 public:
  std::vector<int> sc, sd, rc, rd;  // (P) counts and displacements, alive until completion
  MPI_Request req = MPI_REQUEST_NULL;
  ~MpiRequest() override { wait(); }
  void wait() override {
    if (req != MPI_REQUEST_NULL) MPI_Wait(&req, MPI_STATUS_IGNORE);
  }
};

class MpiComm final : public Comm {
 public:
  explicit MpiComm(MPI_Comm c, bool owned) : c_(c), owned_(owned) {
    MPI_Comm_rank(c_, &rank_);
    MPI_Comm_size(c_, &size_);
  }
  ~MpiComm() override {
    if (owned_ && g_mpi) MPI_Comm_free(&c_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void alltoallv(const void* send, const int64_t* send_bytes, void* recv,
                 const int64_t* recv_bytes) override {
    std::vector<int> sc, sd, rc, rd;
    counts_displs(send_bytes, size_, &sc, &sd, "alltoallv");
    counts_displs(recv_bytes, size_, &rc, &rd, "alltoallv");
    MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, c_);
  }

  std::unique_ptr<CommRequest> ialltoallv(const void* send, const int64_t* send_bytes, void* recv,
                                          const int64_t* recv_bytes) override {
    auto r = std::make_unique<MpiRequest>();
    counts_displs(send_bytes, size_, &r->sc, &r->sd, "ialltoallv");
    counts_displs(recv_bytes, size_, &r->rc, &r->rd, "ialltoallv");
    MPI_Ialltoallv(send, r->sc.data(), r->sd.data(), MPI_BYTE, recv, r->rc.data(), r->rd.data(),
                   MPI_BYTE, c_, &r->req);
    return r;
  }

  void allgatherv(const void* send, int64_t bytes, void* recv,
                  const int64_t* recv_bytes) override {
    std::vector<int> rc, rd;
    counts_displs(recv_bytes, size_, &rc, &rd, "allgatherv");
    MOE_CHECK(recv_bytes[rank_] == bytes);
    if (send == static_cast<const char*>(recv) + rd[rank_])  // already in place
      MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, rc.data(), rd.data(), MPI_BYTE, c_);
    else
      MPI_Allgatherv(send, to_int(bytes, "allgatherv"), MPI_BYTE, recv, rc.data(), rd.data(),
                     MPI_BYTE, c_);
  }

  void allreduce(void* buf, int64_t n, ReduceType t, ReduceOp op) override {
    // In chunks of at most 2^30 elements (MPI's int count).
    const int64_t chunk = int64_t{1} << 30;
    int size = 0;
    MPI_Type_size(mpi_type(t), &size);
    for (int64_t i = 0; i < n; i += chunk) {
      const int m = static_cast<int>(std::min(chunk, n - i));
      MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(buf) + i * size, m, mpi_type(t), mpi_op(op),
                    c_);
    }
  }

  void broadcast(void* buf, int64_t bytes, int root) override {
    MPI_Bcast(buf, to_int(bytes, "broadcast"), MPI_BYTE, root, c_);
  }

  void barrier() override { MPI_Barrier(c_); }

  std::unique_ptr<Comm> split(int color, int key) const override {
    MPI_Comm nc;
    MPI_Comm_split(c_, color, key, &nc);
    return std::make_unique<MpiComm>(nc, true);
  }

 private:
  MPI_Comm c_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

std::unique_ptr<Comm>& world_slot() {
  static std::unique_ptr<Comm> w;
  return w;
}

std::unique_ptr<Comm>& ep_slot() {
  static std::unique_ptr<Comm> c;
  return c;
}

std::unique_ptr<Comm>& dp_slot() {
  static std::unique_ptr<Comm> c;
  return c;
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace

void comm_init(int* argc, char*** argv) {
  if (g_mpi || !launched_by_mpi()) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_mpi = true;
  world_slot() = std::make_unique<MpiComm>(MPI_COMM_WORLD, false);
  if (world_slot()->rank() != 0) {
    std::fflush(stdout);
    const int fd = ::open("/dev/null", O_WRONLY);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::close(fd);
    }
  }
}

void comm_finalize() {
  if (!g_mpi) return;
  MPI_Barrier(MPI_COMM_WORLD);
  ep_slot().reset();
  dp_slot().reset();
  world_slot().reset();
  MPI_Finalize();
  g_mpi = false;
}

void comm_abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (g_mpi && world_slot() && world_slot()->size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

Comm& comm_world() {
  if (!world_slot()) world_slot() = comm_self();
  return *world_slot();
}

Comm& comm_ep() {
  if (!ep_slot()) comm_set_ep_size(0);
  return *ep_slot();
}

Comm& comm_dp() {
  if (!dp_slot()) comm_set_ep_size(0);
  return *dp_slot();
}

void comm_set_ep_size(int n) {
  Comm& w = comm_world();
  const int P = w.size();
  if (n == 0) n = P;
  if (n < 1 || P % n != 0)
    fail("--ep %d: the expert-parallel group size must divide the number of processes (%d)", n, P);
  ep_slot() = w.split(w.rank() / n, w.rank());
  dp_slot() = w.split(w.rank() % n, w.rank());
}

std::unique_ptr<Comm> comm_self() { return std::make_unique<SelfComm>(); }

bool comm_is_mpi() { return g_mpi; }

double comm_sum(Comm& c, double v) {
  c.allreduce(&v, 1, ReduceType::F64, ReduceOp::SUM);
  return v;
}

int64_t comm_sum(Comm& c, int64_t v) {
  c.allreduce(&v, 1, ReduceType::I64, ReduceOp::SUM);
  return v;
}

double comm_max(Comm& c, double v) {
  c.allreduce(&v, 1, ReduceType::F64, ReduceOp::MAX);
  return v;
}

void comm_check_same(Comm& c, const std::string& what, const char* label) {
  if (c.size() == 1) return;
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char ch : what) h = (h ^ ch) * 1099511628211ULL;
  std::vector<uint64_t> all(c.size());
  std::vector<int64_t> bytes(c.size(), sizeof h);
  c.allgatherv(&h, sizeof h, all.data(), bytes.data());
  for (int r = 1; r < c.size(); ++r)
    if (all[r] != all[0])
      fail("ranks disagree on the %s: rank %d's differs from rank 0's (start every rank with the "
           "same model, config and flags)", label, r);
}

}  // namespace moe
