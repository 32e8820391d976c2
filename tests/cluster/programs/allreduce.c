/* An MPI allreduce: each rank gives rank + 1; every rank must get n(n+1)/2. Rank 0
 * prints the sum, the rank count and the hosts the ranks ran on (as SLURMD_NODENAME
 * tells them). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    char node[64] = {0};
    const char *n = getenv("SLURMD_NODENAME");
    strncpy(node, n ? n : "?", sizeof node - 1);
    char *all = rank == 0 ? calloc((size_t)size, sizeof node) : NULL;
    MPI_Gather(node, sizeof node, MPI_CHAR, all, sizeof node, MPI_CHAR, 0, MPI_COMM_WORLD);
    int ok = sum == (long)size * (size + 1) / 2;
    if (rank == 0) {
        printf("ALLREDUCE sum=%ld ranks=%d %s\n", sum, size, ok ? "OK" : "WRONG");
        for (int i = 0; i < size; i++) printf("RANK %d %s\n", i, all + i * sizeof node);
    }
    MPI_Finalize();
    return ok ? 0 : 1;
}
