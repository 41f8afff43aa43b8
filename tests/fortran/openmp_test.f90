!> One model handle used by many OpenMP threads at once (the const calls of the C ABI): a parallel
!> loop of log_prob, score and sample calls gives exactly the serial loop's results, and failing
!> calls on some threads get their own statuses and messages while the others succeed.
program nflow_fortran_openmp_test
  use, intrinsic :: iso_c_binding, only: c_double
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
  use omp_lib, only: omp_get_num_threads
  use nflow
  use check_support
  implicit none
  integer, parameter :: blocks = 64, per_block = 50, n = blocks * per_block
  type(nflow_model) :: flow
  real(c_double), allocatable :: x(:, :), lp_serial(:), lp_parallel(:), grad_serial(:, :)
  real(c_double), allocatable :: grad_parallel(:, :), xs_serial(:, :), xs_parallel(:, :)
  real(c_double), allocatable :: x_bad(:, :), lp_bad(:)
  integer :: b, i, wrong, threads
  integer :: first, last

  call nflow_create_preset(flow, 'real_nvp', 3, transforms=3, hidden_features=16, seed=11)
  allocate (x(3, n), lp_serial(n), lp_parallel(n), grad_serial(3, n), grad_parallel(3, n))
  allocate (xs_serial(3, n), xs_parallel(3, n), lp_bad(n))
  do i = 1, n
    x(:, i) = [sin(0.37_c_double * i), cos(0.11_c_double * i) * 2, 0.001_c_double * i - 1]
  end do
  call flow%fit(x, epochs=5, batch_size=100, learning_rate=1e-2_c_double, seed=2)

  do b = 1, blocks
    first = (b - 1) * per_block + 1
    last = b * per_block
    call flow%log_prob(x(:, first:last), lp_serial(first:last))
    call flow%score(x(:, first:last), grad_serial(:, first:last))
    call flow%sample(b, xs_serial(:, first:last))
  end do

  threads = 1
  !$omp parallel do schedule(dynamic, 1) private(first, last) reduction(max:threads)
  do b = 1, blocks
    first = (b - 1) * per_block + 1
    last = b * per_block
    call flow%log_prob(x(:, first:last), lp_parallel(first:last))
    call flow%score(x(:, first:last), grad_parallel(:, first:last))
    call flow%sample(b, xs_parallel(:, first:last))
    threads = max(threads, omp_get_num_threads())
  end do
  !$omp end parallel do
  write (*, '(a, i0)') 'OpenMP threads: ', threads
  call check(threads > 1, 'the loop ran on more than one thread (OMP_NUM_THREADS=4)')
  call check(all(lp_parallel == lp_serial), 'parallel log_prob = serial log_prob')
  call check(all(grad_parallel == grad_serial), 'parallel score = serial score')
  call check(all(xs_parallel == xs_serial), 'parallel samples = serial samples')

  ! Failures on some threads: a NaN in every third block (the library's check), a log_prob of
  ! the wrong size in every fifth (the module's); every other block must succeed.
  x_bad = x
  do b = 3, blocks, 3
    x_bad(2, (b - 1) * per_block + 7) = ieee_value(1.0_c_double, ieee_quiet_nan)
  end do
  lp_bad = 0
  wrong = 0
  !$omp parallel do schedule(dynamic, 1) reduction(+:wrong)
  do b = 1, blocks
    wrong = wrong + block_errors(b)
  end do
  !$omp end parallel do
  call check(wrong == 0, 'per-thread statuses and messages')
  call flow%close()
  call report('nflow_fortran_openmp_test')
contains
  !> Block b of x_bad: the count of its results that are not as expected.
  integer function block_errors(b) result(wrong)
    integer, intent(in) :: b
    character(len=:), allocatable :: msg
    integer :: first, last, st
    wrong = 0
    first = (b - 1) * per_block + 1
    last = b * per_block
    if (mod(b, 5) == 0) then
      call flow%log_prob(x_bad(:, first:last), lp_bad(first:last - 1), status=st, errmsg=msg)
      if (st /= NFLOW_ERROR_SIZE .or. index(msg, 'log_prob has 49 values') == 0) wrong = wrong + 1
    else
      call flow%log_prob(x_bad(:, first:last), lp_bad(first:last), status=st, errmsg=msg)
      if (mod(b, 3) == 0) then
        if (st /= NFLOW_ERROR_INPUT .or. len(msg) == 0) wrong = wrong + 1
        if (msg /= nflow_last_error()) wrong = wrong + 1 ! this thread's own message
      else
        if (st /= NFLOW_OK .or. len(msg) /= 0) wrong = wrong + 1
        if (any(lp_bad(first:last) /= lp_serial(first:last))) wrong = wrong + 1
      end if
    end if
  end function block_errors
end program nflow_fortran_openmp_test
