!> The Fortran tests' check routine: counts failures and prints each with its description.
module check_support
  implicit none
  private
  public :: check, check_status, failures, checks, report

  integer, save :: failures = 0
  integer, save :: checks = 0

contains

  subroutine check(condition, what)
    logical, intent(in) :: condition
    character(len=*), intent(in) :: what
    checks = checks + 1
    if (.not. condition) then
      failures = failures + 1
      write (*, '(a)') 'FAILED: '//what
    end if
  end subroutine check

  !> A failed call: the expected status, and a message that contains `fragment`.
  subroutine check_status(status, expected, errmsg, fragment, what)
    integer, intent(in) :: status, expected
    character(len=*), intent(in) :: errmsg, fragment, what
    character(len=16) :: got, want
    write (got, '(i0)') status
    write (want, '(i0)') expected
    call check(status == expected, what//': status '//trim(got)//', expected '//trim(want)// &
               ' (message: "'//errmsg//'")')
    call check(index(errmsg, fragment) > 0, what//': the message "'//errmsg// &
               '" does not contain "'//fragment//'"')
  end subroutine check_status

  !> Prints the count and stops with a non-zero code if any check failed.
  subroutine report(name)
    character(len=*), intent(in) :: name
    write (*, '(a, i0, a, i0, a)') name//': ', checks - failures, ' passed, ', failures, ' failed'
    if (failures > 0) error stop 1
  end subroutine report
end module check_support
