!> The Fortran module's tests (ctest label "bindings"): every wrapper, over both real kinds, with
!> checks against independent truth (tests/fortran/checks.inc).
module checks_double
  use, intrinsic :: iso_c_binding, only: c_double, c_float, c_int8_t, c_int64_t
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan, ieee_is_finite
  use nflow
  use check_support
  implicit none
  private
  public :: run_checks
  integer, parameter :: wp = c_double, other_wp = c_float
  integer, parameter :: scalar = NFLOW_FLOAT64, other_scalar = NFLOW_FLOAT32
  character(len=*), parameter :: label = 'double'
  real(wp), parameter :: tol = 1e-10_wp, fd_step = 1e-5_wp, fd_tol = 1e-6_wp
contains
  include 'checks.inc'
end module checks_double

module checks_float
  use, intrinsic :: iso_c_binding, only: c_double, c_float, c_int8_t, c_int64_t
  use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan, ieee_is_finite
  use nflow
  use check_support
  implicit none
  private
  public :: run_checks
  integer, parameter :: wp = c_float, other_wp = c_double
  integer, parameter :: scalar = NFLOW_FLOAT32, other_scalar = NFLOW_FLOAT64
  character(len=*), parameter :: label = 'float'
  ! float: a trained flow's log_prob carries rounding noise of about 1e-4 absolute (measured), so
  ! central differences of float log_prob only check the score's sign and scale (fd_tol 0.2);
  ! checks.inc compares the float score with the double one (1e-3) for the real check.
  real(wp), parameter :: tol = 1e-5_wp, fd_step = 4e-3_wp, fd_tol = 0.2_wp
contains
  include 'checks.inc'
end module checks_float

program nflow_fortran_test
  use check_support, only: report
  use checks_double, only: run_double => run_checks
  use checks_float, only: run_float => run_checks
  implicit none
  call run_double()
  call run_float()
  call report('nflow_fortran_test')
end program nflow_fortran_test
