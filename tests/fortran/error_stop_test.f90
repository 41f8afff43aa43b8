!> Each mode makes one failing call without `status`: the program must end there, with a non-zero
!> exit code and the message (tests/fortran/expect_failure.cmake checks both).
program nflow_fortran_error_stop
  use, intrinsic :: iso_c_binding, only: c_double
  use nflow
  implicit none
  type(nflow_model) :: flow, copy
  real(c_double) :: x(2, 4), lp(4)
  character(len=16) :: mode
  call get_command_argument(1, mode)
  x = 0.5_c_double
  select case (trim(mode))
  case ('size') ! the module's own check: x has 2 rows, the model 3
    call nflow_create_preset(flow, 'real_nvp', 3)
    call flow%log_prob(x, lp)
  case ('file') ! the library's: a missing file
    call nflow_open(flow, 'no_such_file.safetensors')
  case ('copy') ! two owners of one handle
    call nflow_create_preset(flow, 'real_nvp', 2)
    copy = flow
  case default
    write (*, '(a)') 'usage: nflow_fortran_error_stop size|file|copy'
    stop 0 ! exit code 0: the test then fails
  end select
  write (*, '(a)') 'the failing call returned'
end program nflow_fortran_error_stop
