// Serial stand-in for OpenMP in the fuzz build: clang-16 has no OpenMP runtime in Debian's
// packages, and a fuzz target runs one input at a time on one thread anyway. Without -fopenmp the
// pragmas are ignored; these are the runtime calls the library makes (fuzz/omp_serial.cpp).
#pragma once

extern "C" {
int omp_get_max_threads(void);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
int omp_in_parallel(void);
void omp_set_num_threads(int n);
}
