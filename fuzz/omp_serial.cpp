// Serial OpenMP runtime calls for the fuzz build, see omp_serial/omp.h.
#include "omp_serial/omp.h"

extern "C" {
int omp_get_max_threads(void) { return 1; }
int omp_get_thread_num(void) { return 0; }
int omp_get_num_threads(void) { return 1; }
int omp_in_parallel(void) { return 0; }
void omp_set_num_threads(int) {}
}
