!> Importance sampling with a normalizing flow, from Fortran (docs/embedding_fortran.md).
!>
!> The integral I = integral over the box B = [-4, 4]^2 of g(x) = p(x) (1 + x1^2 / 4), where p is a
!> Gaussian mixture (three components with diagonal covariances, one of them narrow), has a closed
!> form (erf and the Gaussian density: see exact_integral). The program
!>   1. draws training points from p exactly, and trains a flow preset on them (nflow_fit);
!>   2. estimates I with N points three ways: plain Monte Carlo (x uniform on B: I ~ |B| mean g),
!>      importance sampling from the untrained flow (a standard normal, the flow's initial state)
!>      and from the trained flow q (I ~ mean g(x) / q(x), x ~ q);
!>   3. prints each estimate with its standard error, and the variance ratios.
!> It stops with an error if an estimate is 4 standard errors or more from the exact value, or if
!> the trained flow does not reduce the variance per point of plain Monte Carlo by a factor of at
!> least 20 (see the threshold's note below) and that of the untrained flow at all.
!>
!> Usage: importance_sampling [points [training_points [epochs]]]
program importance_sampling
  use, intrinsic :: iso_c_binding, only: c_double, c_int64_t
  use nflow
  implicit none
  integer, parameter :: dp = c_double
  real(dp), parameter :: pi = acos(-1.0_dp), half_width = 4, area = (2 * half_width)**2
  ! The mixture: weights, means (2 x 3) and standard deviations (2 x 3).
  real(dp), parameter :: weight(3) = [0.5_dp, 0.3_dp, 0.2_dp]
  real(dp), parameter :: mean(2, 3) = reshape([-1.5_dp, -1.0_dp, 1.5_dp, 0.5_dp, 0.0_dp, 2.0_dp], &
                                              [2, 3])
  real(dp), parameter :: sd(2, 3) = reshape([0.4_dp, 0.6_dp, 0.5_dp, 0.3_dp, 0.25_dp, 0.25_dp], &
                                            [2, 3])
  ! The threshold on the variance ratio (plain Monte Carlo / trained flow). Plain Monte Carlo's
  ! variance per point is |B| integral(g^2) - I^2, about 10 I^2 here; importance sampling's is
  ! I^2 chi^2(g/I || q), a small fraction of I^2 when the flow q is close to g/I. A ratio of 20
  ! asks chi^2 <= 0.5: a flow that has learnt the three modes and their widths (the printed run:
  ! chi^2 = 0.23, a ratio of 45). The untrained flow (a standard normal) gets about 7 I^2.
  real(dp), parameter :: required_ratio = 20
  type(nflow_model) :: flow
  real(dp), allocatable :: train(:, :), x(:, :), log_q(:), values(:)
  real(dp) :: exact, nll, plain(2), untrained(2), trained(2)
  integer :: points, training_points, epochs, seed_size, i
  integer, allocatable :: seed(:)
  logical :: ok

  points = argument(1, 20000)
  training_points = argument(2, 4000)
  epochs = argument(3, 40)
  call random_seed(size=seed_size)
  allocate (seed(seed_size))
  seed = [(20240601 + 17 * i, i = 1, seed_size)]
  call random_seed(put=seed)

  exact = exact_integral()
  write (*, '(a)') 'I = integral over [-4, 4]^2 of p(x) (1 + x1^2/4), p a 3-component Gaussian mixture'
  write (*, '(a, f12.8)') 'exact I (closed form)        = ', exact

  ! 1. Training points drawn from p, and a flow trained on them.
  allocate (train(2, training_points))
  call sample_mixture(train)
  call nflow_create_preset(flow, 'coupling_nsf', 2, transforms=4, hidden_features=32, seed=1)
  allocate (x(2, points), log_q(points), values(points))
  call flow%sample(7, x, log_q)
  untrained = estimate_is(x, log_q)
  call flow%fit(train, epochs=epochs, batch_size=100, learning_rate=5e-3_dp, seed=2, &
                final_nll=nll)
  write (*, '(a, i0, a, i0, a, f8.4)') 'flow: coupling_nsf, trained on ', training_points, &
    ' points for ', epochs, ' epochs, final NLL ', nll

  ! 2. The estimates with N points each.
  call random_number(x)
  x = half_width * (2 * x - 1)
  do i = 1, points
    values(i) = area * g(x(:, i))
  end do
  plain = mean_and_error(values)
  call flow%sample(8, x, log_q)
  trained = estimate_is(x, log_q)
  call flow%close()

  ! 3. The table and the checks.
  write (*, '(/, a, i0, a)') 'N = ', points, ' points each'
  write (*, '(a28, a14, a14, a12, a16)') 'method', 'estimate', 'std. error', '|err|/SE', &
    'variance/point'
  call row('plain Monte Carlo (uniform)', plain)
  call row('IS, untrained flow (normal)', untrained)
  call row('IS, trained flow', trained)
  write (*, '(/, a, f10.1, a, i0, a)') 'variance ratio, plain MC / trained flow:    ', &
    ratio(plain, trained), '  (required >= ', nint(required_ratio), ')'
  write (*, '(a, f10.1)') 'variance ratio, untrained / trained flow:   ', ratio(untrained, trained)
  ok = within(plain) .and. within(untrained) .and. within(trained)
  ok = ok .and. ratio(plain, trained) >= required_ratio .and. ratio(untrained, trained) > 1
  if (.not. ok) error stop 'importance_sampling: an estimate or a variance ratio is out of bounds'
  write (*, '(a)') 'all estimates within 4 standard errors of the exact value'

contains

  !> The integrand: p(x) (1 + x1^2 / 4) on the box, 0 outside.
  real(dp) function g(point)
    real(dp), intent(in) :: point(2)
    integer :: k
    g = 0
    if (any(abs(point) > half_width)) return
    do k = 1, 3
      g = g + weight(k) * exp(-0.5_dp * sum(((point - mean(:, k)) / sd(:, k))**2)) / &
          (2 * pi * sd(1, k) * sd(2, k))
    end do
    g = g * (1 + point(1)**2 / 4)
  end function g

  !> The closed form: for each component, P(a < x2 < b) times the integral over (a, b) of
  !> (1 + x1^2/4) N(x1; m, s^2), with x1 = m + s t: Phi(beta) - Phi(alpha) for the 1, and
  !> m^2 [Phi] + 2 m s [phi(alpha) - phi(beta)] + s^2 ([Phi] + alpha phi(alpha) - beta phi(beta))
  !> for the x1^2.
  real(dp) function exact_integral()
    real(dp) :: alpha, beta, m, s, mass, second
    integer :: k
    exact_integral = 0
    do k = 1, 3
      m = mean(1, k)
      s = sd(1, k)
      alpha = (-half_width - m) / s
      beta = (half_width - m) / s
      mass = cdf(beta) - cdf(alpha)
      second = m**2 * mass + 2 * m * s * (pdf(alpha) - pdf(beta)) + &
               s**2 * (mass + alpha * pdf(alpha) - beta * pdf(beta))
      exact_integral = exact_integral + weight(k) * (mass + second / 4) * &
                       (cdf((half_width - mean(2, k)) / sd(2, k)) - &
                        cdf((-half_width - mean(2, k)) / sd(2, k)))
    end do
  end function exact_integral

  real(dp) function cdf(t)
    real(dp), intent(in) :: t
    cdf = 0.5_dp * erfc(-t / sqrt(2.0_dp))
  end function cdf

  real(dp) function pdf(t)
    real(dp), intent(in) :: t
    pdf = exp(-0.5_dp * t**2) / sqrt(2 * pi)
  end function pdf

  !> Exact draws from the mixture: a component by its weight, then Box-Muller normals.
  subroutine sample_mixture(out)
    real(dp), intent(out) :: out(:, :)
    real(dp) :: u(3)
    integer :: j, k
    do j = 1, size(out, 2)
      call random_number(u)
      k = 1
      if (u(1) > weight(1)) k = 2
      if (u(1) > weight(1) + weight(2)) k = 3
      u(2) = 1 - u(2) ! in (0, 1]
      out(:, j) = mean(:, k) + sd(:, k) * sqrt(-2 * log(u(2))) * &
                  [cos(2 * pi * u(3)), sin(2 * pi * u(3))]
    end do
  end subroutine sample_mixture

  !> Importance sampling: the mean of g(x) / q(x) over x ~ q, and its standard error.
  function estimate_is(x, log_q) result(estimate)
    real(dp), intent(in) :: x(:, :), log_q(:)
    real(dp) :: estimate(2)
    real(dp), allocatable :: w(:)
    integer :: j
    allocate (w(size(log_q)))
    do j = 1, size(log_q)
      w(j) = g(x(:, j)) * exp(-log_q(j))
    end do
    estimate = mean_and_error(w)
  end function estimate_is

  !> The mean of the values and its standard error (sample standard deviation / sqrt(N)).
  function mean_and_error(v) result(estimate)
    real(dp), intent(in) :: v(:)
    real(dp) :: estimate(2)
    estimate(1) = sum(v) / size(v)
    estimate(2) = sqrt(sum((v - estimate(1))**2) / (size(v) - 1) / size(v))
  end function mean_and_error

  real(dp) function ratio(a, b)
    real(dp), intent(in) :: a(2), b(2)
    ratio = (a(2) / b(2))**2
  end function ratio

  logical function within(estimate)
    real(dp), intent(in) :: estimate(2)
    within = abs(estimate(1) - exact) < 4 * estimate(2)
  end function within

  subroutine row(name, estimate)
    character(len=*), intent(in) :: name
    real(dp), intent(in) :: estimate(2)
    write (*, '(a28, f14.8, f14.8, f12.2, f16.6)') name, estimate(1), estimate(2), &
      abs(estimate(1) - exact) / estimate(2), estimate(2)**2 * points
  end subroutine row

  integer function argument(position, default)
    integer, intent(in) :: position, default
    character(len=32) :: text
    integer :: status
    argument = default
    call get_command_argument(position, text, status=status)
    if (status == 0 .and. len_trim(text) > 0) read (text, *) argument
  end function argument
end program importance_sampling
