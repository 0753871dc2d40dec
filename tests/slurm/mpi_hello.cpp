// Smallest MPI program that proves a launch worked: every rank prints its rank, the world
// size and the host, and rank 0 checks that a collective across all ranks completes.
#include <mpi.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);

  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char host[256] = {};
  gethostname(host, sizeof host - 1);

  // A reduction fails or hangs if the ranks were not wired into one job.
  int one = 1;
  int total = 0;
  MPI_Allreduce(&one, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);

  std::printf("hello rank %d of %d on %s sum %d\n", rank, size, host, total);
  MPI_Finalize();
  return total == size ? 0 : 1;
}
