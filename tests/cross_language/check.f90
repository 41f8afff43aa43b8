!> The five-way cross-language check of issue 19, part 5 (Fortran): opens each model that
!> cross_language_make saved and compares the module's log_prob, in both layouts, with the
!> log-densities the C++ template code gave (file formats in tests/cross_language/make_models.cpp).
!>
!> Usage: cross_language_check_fortran <directory> <name> [<name> ...]
program cross_language_check
  use, intrinsic :: iso_c_binding, only: c_double
  use nflow
  implicit none
  character(len=4096) :: directory, name
  integer :: k, failures

  if (command_argument_count() < 2) then
    write (*, '(a)') 'usage: cross_language_check_fortran <directory> <name>...'
    error stop 2
  end if
  call get_command_argument(1, directory)
  failures = 0
  do k = 2, command_argument_count()
    call get_command_argument(k, name)
    failures = failures + check(trim(directory), trim(name))
  end do
  if (failures /= 0) error stop 1

contains

  integer function check(dir, model_name) result(fails)
    character(len=*), intent(in) :: dir, model_name
    type(nflow_model) :: model
    real(c_double), allocatable :: row(:), x(:, :), context(:, :), xt(:, :), ct(:, :)
    real(c_double), allocatable :: want(:), got(:)
    integer :: n, d, c, j, unit, status, layout
    character(len=:), allocatable :: message
    real(c_double) :: worst

    fails = 0
    open (newunit=unit, file=dir//'/'//model_name//'.points.txt', status='old', action='read')
    read (unit, *) n, d, c
    allocate (row(d + c), x(d, n), context(max(c, 1), n), want(n), got(n))
    do j = 1, n
      read (unit, *) row
      x(:, j) = row(1:d)
      if (c > 0) context(:, j) = row(d + 1:)
    end do
    close (unit)
    open (newunit=unit, file=dir//'/'//model_name//'.log_prob.txt', status='old', action='read')
    read (unit, *) want
    close (unit)
    xt = transpose(x)
    ct = transpose(context)

    call nflow_open(model, dir//'/'//model_name//'.safetensors', NFLOW_FLOAT64, status, message)
    if (status /= NFLOW_OK) then
      write (*, '(a)') 'FAIL '//model_name//': '//message
      fails = 1
      return
    end if
    do layout = NFLOW_POINTS_CONTIGUOUS, NFLOW_FEATURES_CONTIGUOUS
      got = 0
      if (layout == NFLOW_POINTS_CONTIGUOUS .and. c > 0) then
        call model%log_prob(x, got, context=context, layout=layout, status=status, errmsg=message)
      else if (layout == NFLOW_POINTS_CONTIGUOUS) then
        call model%log_prob(x, got, layout=layout, status=status, errmsg=message)
      else if (c > 0) then
        call model%log_prob(xt, got, context=ct, layout=layout, status=status, errmsg=message)
      else
        call model%log_prob(xt, got, layout=layout, status=status, errmsg=message)
      end if
      worst = maxval(abs(got - want) / max(1.0_c_double, abs(want)))
      if (status /= NFLOW_OK .or. .not. (worst <= 1e-12_c_double)) then
        fails = fails + 1
        write (*, '(a, i0, a, es10.3)') 'FAIL '//model_name//' (layout ', layout, &
          '): max relative difference ', worst
        if (status /= NFLOW_OK) write (*, '(a)') '  '//message
      else
        write (*, '(a, i0, a, es10.3)') 'ok   '//model_name//' (layout ', layout, &
          '): max relative difference ', worst
      end if
    end do
    call model%close()
  end function check

end program cross_language_check
