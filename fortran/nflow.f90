!> nflow for Fortran: a trained normalizing flow through nflow's C ABI (include/nflow/c/nflow.h),
!> with iso_c_binding only. docs/embedding_fortran.md is the guide.
!>
!>   use nflow
!>   type(nflow_model) :: flow
!>   call nflow_open(flow, 'model.safetensors')
!>   call flow%log_prob(x, lp)            ! x(dim, n), lp(n): real(c_double) or real(c_float)
!>   call flow%close()
!>
!> Conventions:
!> - Points are columns: x(dim, n), the C ABI's NFLOW_POINTS_CONTIGUOUS. Every evaluation also takes
!>   layout = NFLOW_FEATURES_CONTIGUOUS for x(n, dim) (one feature per column).
!> - A context is context(context_dim, n), or context(context_dim, 1): one context for every point
!>   (transposed with NFLOW_FEATURES_CONTIGUOUS).
!> - The arrays' kind selects the C entry point: real(c_double) the _d one, real(c_float) the _f
!>   one; it must match the handle's scalar type (nflow_open's `scalar`, by default the file's).
!> - Every procedure takes optional `status` (an NFLOW_* code) and `errmsg` (the message) arguments,
!>   as Fortran's allocate(stat=, errmsg=) does. Without `status`, a failure ends the program with
!>   `error stop` and the message. On failure the outputs are left as they were.
!> - The array shapes are checked here (the C ABI sees only pointers): a mismatch is
!>   NFLOW_ERROR_SIZE with a sentence naming the array.
!> - Thread safety: the module keeps no state of its own. Every type-bound procedure but fit and
!>   close may run on one handle from many threads at once (OpenMP), as the C ABI allows.
!> - A model owns its handle: close it with %close() (a finalizer also closes it where the compiler
!>   finalizes); assigning one open model to another is refused (two owners of one handle).
!>
!> The float procedures (_f) repeat the double ones (_d): the float block is the double block with
!> c_float for c_double (but learning_rate stays c_double) and _f, _f32 for _d, _d32 (sed -e
!> '/learning_rate$/!s/c_double/c_float/g' -e 's/_d\b/_f/g' -e 's/_d32\b/_f32/g'). Keep them alike.
module nflow
  use, intrinsic :: iso_c_binding, only: c_ptr, c_null_ptr, c_null_char, c_associated, c_loc, &
                                         c_f_pointer, c_int, c_size_t, c_int8_t, c_int32_t, &
                                         c_int64_t, c_char, c_double, c_float
  implicit none
  private

  !> The C ABI version this module was written for; nflow_open and nflow_create_preset check it
  !> against nflow_abi_version() (the library's).
  integer, parameter, public :: NFLOW_FORTRAN_ABI_VERSION = 1

  ! nflow_status
  integer, parameter, public :: NFLOW_OK = 0
  integer, parameter, public :: NFLOW_ERROR_NULL_POINTER = 1
  integer, parameter, public :: NFLOW_ERROR_SIZE = 2
  integer, parameter, public :: NFLOW_ERROR_INPUT = 3
  integer, parameter, public :: NFLOW_ERROR_IO = 4
  integer, parameter, public :: NFLOW_ERROR_FORMAT = 5
  integer, parameter, public :: NFLOW_ERROR_VERSION = 6
  integer, parameter, public :: NFLOW_ERROR_SCALAR_TYPE = 7
  integer, parameter, public :: NFLOW_ERROR_UNSUPPORTED = 8
  integer, parameter, public :: NFLOW_ERROR_ARGUMENT = 9
  integer, parameter, public :: NFLOW_ERROR_INTERNAL = 10
  ! nflow_scalar
  integer, parameter, public :: NFLOW_SCALAR_FILE = 0
  integer, parameter, public :: NFLOW_FLOAT32 = 1
  integer, parameter, public :: NFLOW_FLOAT64 = 2
  ! nflow_layout
  integer, parameter, public :: NFLOW_POINTS_CONTIGUOUS = 0
  integer, parameter, public :: NFLOW_FEATURES_CONTIGUOUS = 1

  public :: nflow_model
  public :: nflow_open, nflow_open_memory, nflow_create_preset
  public :: nflow_abi_version, nflow_version, nflow_schema_version, nflow_last_error
  public :: nflow_status_name

  !> A model: owns one C handle (null when closed).
  type :: nflow_model
    private
    type(c_ptr) :: handle = c_null_ptr
  contains
    procedure :: is_open => model_is_open
    procedure :: close => model_close
    procedure :: c_handle => model_c_handle
    procedure :: dim => model_dim
    procedure :: context_dim => model_context_dim
    procedure :: scalar_type => model_scalar_type
    procedure :: parameter_count => model_parameter_count
    procedure :: schema_version => model_schema_version
    procedure :: describe => model_describe
    procedure :: save => model_save
    procedure, private :: log_prob_d, log_prob_f
    generic :: log_prob => log_prob_d, log_prob_f
    procedure, private :: forward_d, forward_f
    generic :: forward => forward_d, forward_f
    procedure, private :: inverse_d, inverse_f
    generic :: inverse => inverse_d, inverse_f
    procedure, private :: sample_from_uniforms_d, sample_from_uniforms_f
    generic :: sample_from_uniforms => sample_from_uniforms_d, sample_from_uniforms_f
    procedure, private :: sample_d, sample_f, sample_d32, sample_f32
    generic :: sample => sample_d, sample_f, sample_d32, sample_f32
    procedure, private :: score_d, score_f
    generic :: score => score_d, score_f
    procedure, private :: context_gradient_d, context_gradient_f
    generic :: context_gradient => context_gradient_d, context_gradient_f
    procedure, private :: fit_d, fit_f
    generic :: fit => fit_d, fit_f
    procedure, private :: assign_model
    generic :: assignment(=) => assign_model
    final :: finalize_model
  end type nflow_model

  !> What one call has found so far: its status, message and the shapes it derived.
  type :: call_state
    character(len=:), allocatable :: what
    character(len=:), allocatable :: msg
    integer(c_int) :: st = 0
    integer(c_int) :: layout = 0
    integer :: n = 0
    integer :: dim = 0
    integer :: context_dim = 0
  end type call_state

  interface nflow_open_memory
    module procedure open_memory_bytes, open_memory_string
  end interface nflow_open_memory

  ! ---- the C ABI ----------------------------------------------------------------------------
  interface
    function c_strlen(s) bind(c, name='strlen') result(n)
      import :: c_ptr, c_size_t
      type(c_ptr), value :: s
      integer(c_size_t) :: n
    end function c_strlen
    function c_abi_version() bind(c, name='nflow_abi_version') result(v)
      import :: c_int
      integer(c_int) :: v
    end function c_abi_version
    function c_version() bind(c, name='nflow_version') result(p)
      import :: c_ptr
      type(c_ptr) :: p
    end function c_version
    function c_schema_version() bind(c, name='nflow_schema_version') result(v)
      import :: c_int
      integer(c_int) :: v
    end function c_schema_version
    function c_last_error() bind(c, name='nflow_last_error') result(p)
      import :: c_ptr
      type(c_ptr) :: p
    end function c_last_error
    function c_status_name(status) bind(c, name='nflow_status_name') result(p)
      import :: c_ptr, c_int
      integer(c_int), value :: status
      type(c_ptr) :: p
    end function c_status_name
    function c_open(path, scalar, out) bind(c, name='nflow_open') result(st)
      import :: c_char, c_int, c_ptr
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int), value :: scalar
      type(c_ptr), intent(out) :: out
      integer(c_int) :: st
    end function c_open
    function c_open_memory(bytes, size, scalar, out) bind(c, name='nflow_open_memory') result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: bytes
      integer(c_size_t), value :: size
      integer(c_int), value :: scalar
      type(c_ptr), intent(out) :: out
      integer(c_int) :: st
    end function c_open_memory
    function c_create_preset(family, dim, options_json, scalar, out) &
        bind(c, name='nflow_create_preset') result(st)
      import :: c_char, c_size_t, c_int, c_ptr
      character(kind=c_char), intent(in) :: family(*)
      integer(c_size_t), value :: dim
      type(c_ptr), value :: options_json
      integer(c_int), value :: scalar
      type(c_ptr), intent(out) :: out
      integer(c_int) :: st
    end function c_create_preset
    function c_save(model, path) bind(c, name='nflow_save') result(st)
      import :: c_ptr, c_char, c_int
      type(c_ptr), value :: model
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int) :: st
    end function c_save
    subroutine c_close(model) bind(c, name='nflow_close')
      import :: c_ptr
      type(c_ptr), value :: model
    end subroutine c_close
    function c_dim(model, out) bind(c, name='nflow_dim') result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model
      integer(c_size_t), intent(out) :: out
      integer(c_int) :: st
    end function c_dim
    function c_context_dim(model, out) bind(c, name='nflow_context_dim') result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model
      integer(c_size_t), intent(out) :: out
      integer(c_int) :: st
    end function c_context_dim
    function c_scalar_type(model, out) bind(c, name='nflow_scalar_type') result(st)
      import :: c_ptr, c_int
      type(c_ptr), value :: model
      integer(c_int), intent(out) :: out
      integer(c_int) :: st
    end function c_scalar_type
    function c_parameter_count(model, out) bind(c, name='nflow_parameter_count') result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model
      integer(c_size_t), intent(out) :: out
      integer(c_int) :: st
    end function c_parameter_count
    function c_model_schema_version(model, out) bind(c, name='nflow_model_schema_version') &
        result(st)
      import :: c_ptr, c_int
      type(c_ptr), value :: model
      integer(c_int), intent(out) :: out
      integer(c_int) :: st
    end function c_model_schema_version
    function c_describe(model, out) bind(c, name='nflow_describe') result(st)
      import :: c_ptr, c_int
      type(c_ptr), value :: model
      type(c_ptr), intent(out) :: out
      integer(c_int) :: st
    end function c_describe
  end interface

  ! The evaluations: one interface for the double and float entry points alike (every array a
  ! c_ptr, null where absent), each entry point declared with it.
  abstract interface
    function c_log_prob_i(model, n, layout, x, x_stride, context, context_stride, log_prob) &
        bind(c) result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model, x, context, log_prob
      integer(c_size_t), value :: n, x_stride, context_stride
      integer(c_int), value :: layout
      integer(c_int) :: st
    end function c_log_prob_i
    function c_transform_i(model, n, layout, x, x_stride, context, context_stride, y, y_stride, &
                           log_det) bind(c) result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model, x, context, y, log_det
      integer(c_size_t), value :: n, x_stride, context_stride, y_stride
      integer(c_int), value :: layout
      integer(c_int) :: st
    end function c_transform_i
    function c_sample_i(model, n, seed, layout, context, context_stride, x, x_stride, log_prob) &
        bind(c) result(st)
      import :: c_ptr, c_size_t, c_int, c_int64_t
      type(c_ptr), value :: model, context, x, log_prob
      integer(c_size_t), value :: n, context_stride, x_stride
      integer(c_int64_t), value :: seed
      integer(c_int), value :: layout
      integer(c_int) :: st
    end function c_sample_i
    function c_gradient_i(model, n, layout, x, x_stride, context, context_stride, grad, &
                          grad_stride) bind(c) result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model, x, context, grad
      integer(c_size_t), value :: n, x_stride, context_stride, grad_stride
      integer(c_int), value :: layout
      integer(c_int) :: st
    end function c_gradient_i
    function c_fit_i(model, n, layout, x, x_stride, context, context_stride, options_json, &
                     final_nll) bind(c) result(st)
      import :: c_ptr, c_size_t, c_int
      type(c_ptr), value :: model, x, context, options_json, final_nll
      integer(c_size_t), value :: n, x_stride, context_stride
      integer(c_int), value :: layout
      integer(c_int) :: st
    end function c_fit_i
  end interface
  procedure(c_log_prob_i), bind(c, name='nflow_log_prob_d') :: c_log_prob_d
  procedure(c_log_prob_i), bind(c, name='nflow_log_prob_f') :: c_log_prob_f
  procedure(c_transform_i), bind(c, name='nflow_forward_d') :: c_forward_d
  procedure(c_transform_i), bind(c, name='nflow_forward_f') :: c_forward_f
  procedure(c_transform_i), bind(c, name='nflow_inverse_d') :: c_inverse_d
  procedure(c_transform_i), bind(c, name='nflow_inverse_f') :: c_inverse_f
  procedure(c_transform_i), bind(c, name='nflow_sample_from_uniforms_d') :: c_sample_from_uniforms_d
  procedure(c_transform_i), bind(c, name='nflow_sample_from_uniforms_f') :: c_sample_from_uniforms_f
  procedure(c_sample_i), bind(c, name='nflow_sample_d') :: c_sample_d
  procedure(c_sample_i), bind(c, name='nflow_sample_f') :: c_sample_f
  procedure(c_gradient_i), bind(c, name='nflow_score_d') :: c_score_d
  procedure(c_gradient_i), bind(c, name='nflow_score_f') :: c_score_f
  procedure(c_gradient_i), bind(c, name='nflow_context_gradient_d') :: c_context_gradient_d
  procedure(c_gradient_i), bind(c, name='nflow_context_gradient_f') :: c_context_gradient_f
  procedure(c_fit_i), bind(c, name='nflow_fit_d') :: c_fit_d
  procedure(c_fit_i), bind(c, name='nflow_fit_f') :: c_fit_f

contains

  ! ---- versions and errors ----------------------------------------------------------------------

  !> NFLOW_ABI_VERSION of the library linked (NFLOW_FORTRAN_ABI_VERSION is this module's).
  integer function nflow_abi_version()
    nflow_abi_version = int(c_abi_version())
  end function nflow_abi_version

  !> nflow's version, "major.minor.patch".
  function nflow_version() result(version)
    character(len=:), allocatable :: version
    version = from_c_string(c_version())
  end function nflow_version

  !> The newest model-file schema version the library reads (and the one it writes).
  integer function nflow_schema_version()
    nflow_schema_version = int(c_schema_version())
  end function nflow_schema_version

  !> The calling thread's message of the library's last failed call ("" if none). The procedures
  !> of this module also return their messages in `errmsg`, which covers their own checks too.
  function nflow_last_error() result(message)
    character(len=:), allocatable :: message
    message = from_c_string(c_last_error())
  end function nflow_last_error

  !> The constant's name of a status, e.g. "NFLOW_ERROR_SIZE".
  function nflow_status_name(status) result(name)
    integer, intent(in) :: status
    character(len=:), allocatable :: name
    name = from_c_string(c_status_name(int(status, c_int)))
  end function nflow_status_name

  ! ---- opening, building, saving, closing --------------------------------------------------------

  !> Opens a model file (a self-describing nflow safetensors file). `scalar`: NFLOW_SCALAR_FILE
  !> (the default: the file's own), NFLOW_FLOAT32 or NFLOW_FLOAT64. Trailing blanks of `path` are
  !> ignored. A model that is open is closed first.
  subroutine nflow_open(model, path, scalar, status, errmsg)
    type(nflow_model), intent(inout) :: model
    character(len=*), intent(in) :: path
    integer, intent(in), optional :: scalar
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    type(c_ptr) :: handle
    call begin_open(s, 'nflow_open', model, scalar)
    if (s%st == NFLOW_OK) then
      call from_c(s, c_open(trim(path)//c_null_char, scalar_or_file(scalar), handle))
      if (s%st == NFLOW_OK) model%handle = handle
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine nflow_open

  !> Opens a model from the bytes of a model file (the bytes are not kept).
  subroutine open_memory_bytes(model, bytes, scalar, status, errmsg)
    type(nflow_model), intent(inout) :: model
    integer(c_int8_t), intent(in), target, contiguous :: bytes(:)
    integer, intent(in), optional :: scalar
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    type(c_ptr) :: handle
    integer(c_int8_t), target :: none(1)
    call begin_open(s, 'nflow_open_memory', model, scalar)
    if (s%st == NFLOW_OK) then
      if (size(bytes) > 0) then
        call from_c(s, c_open_memory(c_loc(bytes), int(size(bytes), c_size_t), &
                                     scalar_or_file(scalar), handle))
      else
        none = 0
        call from_c(s, c_open_memory(c_loc(none), 0_c_size_t, scalar_or_file(scalar), handle))
      end if
      if (s%st == NFLOW_OK) model%handle = handle
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine open_memory_bytes

  !> Opens a model from the bytes of a model file held in a character string (e.g. read with
  !> access='stream').
  subroutine open_memory_string(model, bytes, scalar, status, errmsg)
    type(nflow_model), intent(inout) :: model
    character(len=*), intent(in) :: bytes
    integer, intent(in), optional :: scalar
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    character(len=:), allocatable :: text
    call open_memory_bytes(model, transfer(bytes, [0_c_int8_t], len(bytes)), scalar, status, text)
    if (present(errmsg)) errmsg = text
  end subroutine open_memory_string

  !> A fresh (untrained) preset: `family` one of "real_nvp", "nice", "glow", "maf", "iaf",
  !> "coupling_nsf", "autoregressive_nsf", "cnf"; the options as keywords (those given are passed; the
  !> others keep the preset's defaults, docs/presets.md) or as a JSON object in `options_json`
  !> (not both). `scalar`: NFLOW_FLOAT64 (the default) or NFLOW_FLOAT32.
  subroutine nflow_create_preset(model, family, dim, transforms, hidden_features, hidden_layers, &
                                 context, bins, bound, seed, options_json, scalar, status, errmsg)
    type(nflow_model), intent(inout) :: model
    character(len=*), intent(in) :: family
    integer, intent(in) :: dim
    integer, intent(in), optional :: transforms, hidden_features, hidden_layers, context, bins
    real(c_double), intent(in), optional :: bound
    integer, intent(in), optional :: seed
    character(len=*), intent(in), optional :: options_json
    integer, intent(in), optional :: scalar
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    type(c_ptr) :: handle
    character(kind=c_char, len=:), allocatable, target :: json
    logical :: keywords
    integer(c_int) :: kind
    kind = NFLOW_FLOAT64
    if (present(scalar)) kind = int(scalar, c_int)
    call begin_open(s, 'nflow_create_preset', model, scalar)
    if (s%st /= NFLOW_OK) then
      if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
      return
    end if
    if (dim < 1) call fail(s, NFLOW_ERROR_SIZE, 'dim is '//itoa(dim)//'; it must be at least 1')
    keywords = present(transforms) .or. present(hidden_features) .or. present(hidden_layers) &
               .or. present(context) .or. present(bins) .or. present(bound) .or. present(seed)
    if (keywords .and. present(options_json)) &
      call fail(s, NFLOW_ERROR_ARGUMENT, 'give the options either as keywords or as '// &
                'options_json, not both')
    if (s%st == NFLOW_OK) then
      if (present(options_json)) then
        json = trim(options_json)//c_null_char
      else
        json = '{'
        call json_int(json, 'transforms', transforms)
        call json_int(json, 'hidden_features', hidden_features)
        call json_int(json, 'hidden_layers', hidden_layers)
        call json_int(json, 'context', context)
        call json_int(json, 'bins', bins)
        call json_real(json, 'bound', bound)
        call json_int(json, 'seed', seed)
        json = json//'}'//c_null_char
      end if
      call from_c(s, c_create_preset(trim(family)//c_null_char, int(dim, c_size_t), c_loc(json), &
                                     kind, handle))
      if (s%st == NFLOW_OK) model%handle = handle
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine nflow_create_preset

  !> Writes the model (architecture and parameters) to a self-describing file.
  subroutine model_save(self, path, status, errmsg)
    class(nflow_model), intent(in) :: self
    character(len=*), intent(in) :: path
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    call begin(s, 'save', self)
    if (s%st == NFLOW_OK) call from_c(s, c_save(self%handle, trim(path)//c_null_char))
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine model_save

  !> Frees the handle (nothing if closed). Not while another thread uses the model.
  subroutine model_close(self)
    class(nflow_model), intent(inout) :: self
    if (c_associated(self%handle)) call c_close(self%handle)
    self%handle = c_null_ptr
  end subroutine model_close

  impure elemental subroutine finalize_model(self)
    type(nflow_model), intent(inout) :: self
    call self%close()
  end subroutine finalize_model

  !> Assignment: refused for an open model on the right (both would own its handle); assigning a
  !> closed model closes the left one.
  subroutine assign_model(lhs, rhs)
    class(nflow_model), intent(inout) :: lhs
    class(nflow_model), intent(in) :: rhs
    if (c_associated(rhs%handle)) &
      error stop 'nflow: an open nflow_model cannot be copied by assignment (two variables '// &
        'would own one handle); pass it as an argument, or open the file again'
    call lhs%close()
  end subroutine assign_model

  ! ---- queries -----------------------------------------------------------------------------------

  logical function model_is_open(self)
    class(nflow_model), intent(in) :: self
    model_is_open = c_associated(self%handle)
  end function model_is_open

  !> The C handle (an nflow_model*), for calling the C ABI directly; null when closed.
  function model_c_handle(self) result(handle)
    class(nflow_model), intent(in) :: self
    type(c_ptr) :: handle
    handle = self%handle
  end function model_c_handle

  !> The model's dimension (features per point).
  integer function model_dim(self, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    model_dim = 0
    call begin(s, 'dim', self)
    model_dim = s%dim
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end function model_dim

  !> The context's dimension (0: unconditional).
  integer function model_context_dim(self, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    model_context_dim = 0
    call begin(s, 'context_dim', self)
    model_context_dim = s%context_dim
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end function model_context_dim

  !> NFLOW_FLOAT32 or NFLOW_FLOAT64: the kind of the arrays the model takes.
  integer function model_scalar_type(self, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_int) :: scalar
    model_scalar_type = 0
    call begin(s, 'scalar_type', self)
    if (s%st == NFLOW_OK) then
      call from_c(s, c_scalar_type(self%handle, scalar))
      if (s%st == NFLOW_OK) model_scalar_type = int(scalar)
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end function model_scalar_type

  !> The number of trainable parameters.
  function model_parameter_count(self, status, errmsg) result(count)
    class(nflow_model), intent(in) :: self
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    integer(c_int64_t) :: count
    type(call_state) :: s
    integer(c_size_t) :: value
    count = 0
    call begin(s, 'parameter_count', self)
    if (s%st == NFLOW_OK) then
      call from_c(s, c_parameter_count(self%handle, value))
      if (s%st == NFLOW_OK) count = int(value, c_int64_t)
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end function model_parameter_count

  !> The schema version of the file the model came from (nflow_schema_version() for a preset).
  integer function model_schema_version(self, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_int) :: version
    model_schema_version = 0
    call begin(s, 'schema_version', self)
    if (s%st == NFLOW_OK) then
      call from_c(s, c_model_schema_version(self%handle, version))
      if (s%st == NFLOW_OK) model_schema_version = int(version)
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end function model_schema_version

  !> The architecture as JSON (the file's description).
  function model_describe(self, status, errmsg) result(json)
    class(nflow_model), intent(in) :: self
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    character(len=:), allocatable :: json
    type(call_state) :: s
    type(c_ptr) :: text
    json = ''
    call begin(s, 'describe', self)
    if (s%st == NFLOW_OK) then
      call from_c(s, c_describe(self%handle, text))
      if (s%st == NFLOW_OK) json = from_c_string(text)
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end function model_describe

  ! ---- helpers (no state: every call keeps its own call_state) -----------------------------------

  !> Starts a call on an open model: its dimensions, and the layout (checked).
  subroutine begin(s, what, model, layout)
    type(call_state), intent(inout) :: s
    character(len=*), intent(in) :: what
    class(nflow_model), intent(in) :: model
    integer, intent(in), optional :: layout
    integer(c_size_t) :: value
    s%what = 'nflow_model%'//what
    s%st = NFLOW_OK
    s%layout = NFLOW_POINTS_CONTIGUOUS
    if (.not. c_associated(model%handle)) then
      call fail(s, NFLOW_ERROR_NULL_POINTER, 'the model is not open (nflow_open or '// &
                'nflow_create_preset opens one)')
      return
    end if
    if (present(layout)) then
      if (layout /= NFLOW_POINTS_CONTIGUOUS .and. layout /= NFLOW_FEATURES_CONTIGUOUS) then
        call fail(s, NFLOW_ERROR_ARGUMENT, 'layout is '//itoa(layout)//'; it must be '// &
                  'NFLOW_POINTS_CONTIGUOUS or NFLOW_FEATURES_CONTIGUOUS')
        return
      end if
      s%layout = int(layout, c_int)
    end if
    call from_c(s, c_dim(model%handle, value))
    if (s%st /= NFLOW_OK) return
    s%dim = int(value)
    call from_c(s, c_context_dim(model%handle, value))
    if (s%st /= NFLOW_OK) return
    s%context_dim = int(value)
  end subroutine begin

  !> Starts nflow_open*, nflow_create_preset: the ABI check, the scalar checked, and an open
  !> model closed.
  subroutine begin_open(s, what, model, scalar)
    type(call_state), intent(inout) :: s
    character(len=*), intent(in) :: what
    type(nflow_model), intent(inout) :: model
    integer, intent(in), optional :: scalar
    s%what = what
    s%st = NFLOW_OK
    if (c_abi_version() /= NFLOW_FORTRAN_ABI_VERSION) then
      call fail(s, NFLOW_ERROR_VERSION, 'the nflow Fortran module was written for the C ABI '// &
                'version '//itoa(NFLOW_FORTRAN_ABI_VERSION)//' but the library linked has '// &
                'version '//itoa(int(c_abi_version()))//'; rebuild the module with that library')
      return
    end if
    if (present(scalar)) then
      if (scalar /= NFLOW_SCALAR_FILE .and. scalar /= NFLOW_FLOAT32 .and. &
          scalar /= NFLOW_FLOAT64) then
        call fail(s, NFLOW_ERROR_ARGUMENT, 'scalar is '//itoa(scalar)//'; it must be '// &
                  'NFLOW_SCALAR_FILE, NFLOW_FLOAT32 or NFLOW_FLOAT64')
        return
      end if
    end if
    call model%close()
  end subroutine begin_open

  integer(c_int) function scalar_or_file(scalar)
    integer, intent(in), optional :: scalar
    scalar_or_file = NFLOW_SCALAR_FILE
    if (present(scalar)) scalar_or_file = int(scalar, c_int)
  end function scalar_or_file

  !> The first matrix of points of a call (x, z or u): its rows checked against `rows`, its
  !> number of points taken as the call's n.
  subroutine points(s, name, shp, rows, stride)
    type(call_state), intent(inout) :: s
    character(len=*), intent(in) :: name
    integer, intent(in) :: shp(2), rows
    integer(c_size_t), intent(out) :: stride
    stride = 0
    if (s%st /= NFLOW_OK) return
    if (s%layout == NFLOW_POINTS_CONTIGUOUS) then
      s%n = shp(2)
    else
      s%n = shp(1)
    end if
    call matrix(s, name, shp, rows, .false., stride)
  end subroutine points

  !> Another matrix of the call: `rows` features for each of the call's n points (or for one
  !> point shared by all when `shared` allows it: then its stride is 0).
  subroutine matrix(s, name, shp, rows, shared, stride)
    type(call_state), intent(inout) :: s
    character(len=*), intent(in) :: name
    integer, intent(in) :: shp(2), rows
    logical, intent(in) :: shared
    integer(c_size_t), intent(out) :: stride
    integer :: features, count
    stride = 0
    if (s%st /= NFLOW_OK) return
    if (s%layout == NFLOW_POINTS_CONTIGUOUS) then
      features = shp(1)
      count = shp(2)
    else
      features = shp(2)
      count = shp(1)
    end if
    if (features /= rows) then
      if (s%layout == NFLOW_POINTS_CONTIGUOUS) then
        call fail(s, NFLOW_ERROR_SIZE, name//' has '//itoa(features)//' rows but needs '// &
                  itoa(rows)//' (one row per feature, one column per point)')
      else
        call fail(s, NFLOW_ERROR_SIZE, name//' has '//itoa(features)//' columns but needs '// &
                  itoa(rows)//' (NFLOW_FEATURES_CONTIGUOUS: one row per point, one column per '// &
                  'feature)')
      end if
      return
    end if
    if (count == s%n) then
      if (s%layout == NFLOW_POINTS_CONTIGUOUS) then
        stride = int(rows, c_size_t)
      else
        stride = int(s%n, c_size_t)
      end if
    else if (shared .and. count == 1) then
      stride = 0
    else if (shared) then
      call fail(s, NFLOW_ERROR_SIZE, name//' has '//itoa(count)//' points but the call has '// &
                itoa(s%n)//' (give one per point, or one for all)')
    else
      call fail(s, NFLOW_ERROR_SIZE, name//' has '//itoa(count)//' points but the call has '// &
                itoa(s%n))
    end if
  end subroutine matrix

  !> A per-point output (log_prob, log_det): n values.
  subroutine values(s, name, count)
    type(call_state), intent(inout) :: s
    character(len=*), intent(in) :: name
    integer, intent(in) :: count
    if (s%st /= NFLOW_OK) return
    if (count /= s%n) call fail(s, NFLOW_ERROR_SIZE, name//' has '//itoa(count)// &
                                ' values but the call has '//itoa(s%n)//' points')
  end subroutine values

  subroutine fail(s, status, message)
    type(call_state), intent(inout) :: s
    integer, intent(in) :: status
    character(len=*), intent(in) :: message
    if (s%st /= NFLOW_OK) return
    s%st = int(status, c_int)
    s%msg = s%what//': '//message
  end subroutine fail

  !> Takes a C call's status (and on failure the thread's message).
  subroutine from_c(s, status)
    type(call_state), intent(inout) :: s
    integer(c_int), intent(in) :: status
    if (status == NFLOW_OK .or. s%st /= NFLOW_OK) return
    s%st = status
    s%msg = from_c_string(c_last_error())
    if (len(s%msg) == 0) s%msg = s%what//': failed ('//from_c_string(c_status_name(status))//')'
  end subroutine from_c

  !> The call's message ("" if it succeeded). Each public procedure assigns its `errmsg` itself:
  !> gfortran 12 loses the length of an optional deferred-length argument passed on to another
  !> procedure.
  function message(s) result(text)
    type(call_state), intent(in) :: s
    character(len=:), allocatable :: text
    if (s%st == NFLOW_OK) then
      text = ''
    else
      text = s%msg
    end if
  end function message

  !> Ends a call: `status` set where present, or `error stop` with the message on failure without.
  subroutine finish(s, status)
    type(call_state), intent(in) :: s
    integer, intent(out), optional :: status
    character(len=:), allocatable :: text
    if (present(status)) status = int(s%st)
    if (s%st /= NFLOW_OK .and. .not. present(status)) then
      text = 'nflow: '//from_c_string(c_status_name(s%st))//': '//s%msg
      error stop text
    end if
  end subroutine finish

  !> The context of a call: context_dim rows, one column per point or one for all.
  subroutine context_matrix(s, shp, stride)
    type(call_state), intent(inout) :: s
    integer, intent(in) :: shp(2)
    integer(c_size_t), intent(out) :: stride
    stride = 0
    if (s%st /= NFLOW_OK) return
    if (s%context_dim == 0) then
      call fail(s, NFLOW_ERROR_INPUT, 'a context was given but the model is unconditional '// &
                '(context_dim 0)')
      return
    end if
    call matrix(s, 'context', shp, s%context_dim, .true., stride)
  end subroutine context_matrix

  !> No context given: right for an unconditional model only.
  subroutine no_context(s)
    type(call_state), intent(inout) :: s
    if (s%st /= NFLOW_OK .or. s%context_dim == 0) return
    call fail(s, NFLOW_ERROR_INPUT, 'the model is conditional (context_dim '// &
              itoa(s%context_dim)//'): give context=, one column per point or one for all')
  end subroutine no_context

  !> A C string copied into a Fortran one ("" for a null pointer).
  function from_c_string(text) result(string)
    type(c_ptr), intent(in) :: text
    character(len=:), allocatable :: string
    character(kind=c_char), pointer :: chars(:)
    integer :: i, length
    if (.not. c_associated(text)) then
      string = ''
      return
    end if
    length = int(c_strlen(text))
    call c_f_pointer(text, chars, [length])
    allocate (character(len=length) :: string)
    do i = 1, length
      string(i:i) = chars(i)
    end do
  end function from_c_string

  function itoa(value) result(text)
    integer, intent(in) :: value
    character(len=:), allocatable :: text
    character(len=24) :: buffer
    write (buffer, '(i0)') value
    text = trim(buffer)
  end function itoa

  subroutine json_key(json, key)
    character(kind=c_char, len=:), allocatable, intent(inout) :: json
    character(len=*), intent(in) :: key
    if (len(json) > 1) json = json//', '
    json = json//'"'//key//'": '
  end subroutine json_key

  subroutine json_int(json, key, value)
    character(kind=c_char, len=:), allocatable, intent(inout) :: json
    character(len=*), intent(in) :: key
    integer, intent(in), optional :: value
    if (.not. present(value)) return
    call json_key(json, key)
    json = json//itoa(value)
  end subroutine json_int

  !> A real as JSON: 17 significant digits (a double's round trip); NaN and Inf are written as
  !> they are, which the library refuses with a message.
  subroutine json_real(json, key, value)
    character(kind=c_char, len=:), allocatable, intent(inout) :: json
    character(len=*), intent(in) :: key
    real(c_double), intent(in), optional :: value
    character(len=32) :: buffer
    if (.not. present(value)) return
    call json_key(json, key)
    write (buffer, '(es25.17e3)') value
    json = json//trim(adjustl(buffer))
  end subroutine json_real

  !> The options of fit as JSON: options_json, or the keywords given.
  subroutine fit_options(s, json, epochs, batch_size, learning_rate, seed, options_json)
    type(call_state), intent(inout) :: s
    character(kind=c_char, len=:), allocatable, intent(out) :: json
    integer, intent(in), optional :: epochs, batch_size
    real(c_double), intent(in), optional :: learning_rate
    integer, intent(in), optional :: seed
    character(len=*), intent(in), optional :: options_json
    if (present(options_json)) then
      if (present(epochs) .or. present(batch_size) .or. present(learning_rate) .or. &
          present(seed)) call fail(s, NFLOW_ERROR_ARGUMENT, 'give the options either as '// &
                                   'keywords or as options_json, not both')
      json = trim(options_json)//c_null_char
      return
    end if
    json = '{'
    call json_int(json, 'epochs', epochs)
    call json_int(json, 'batch_size', batch_size)
    call json_real(json, 'learning_rate', learning_rate)
    call json_int(json, 'seed', seed)
    json = json//'}'//c_null_char
  end subroutine fit_options

  ! ---- evaluation, double (the float block below repeats it with c_float) ------------------------

  !> log p(x | context) of the points x(dim, n) into log_prob(n).
  subroutine log_prob_d(self, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_double), intent(in), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous :: log_prob(:)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, c_stride
    type(c_ptr) :: c
    c = c_null_ptr
    c_stride = 0
    call begin(s, 'log_prob', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    call values(s, 'log_prob', size(log_prob))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      call from_c(s, c_log_prob_d(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, &
                                  c, c_stride, c_loc(log_prob)))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine log_prob_d

  !> z = f(x) (data to latent), z and x of the same shape, and log|det df/dx| into log_det(n).
  subroutine forward_d(self, x, z, log_det, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_double), intent(in), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous :: z(:, :)
    real(c_double), intent(inout), target, contiguous, optional :: log_det(:)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, z_stride, c_stride
    type(c_ptr) :: c, ld
    c = c_null_ptr
    ld = c_null_ptr
    c_stride = 0
    call begin(s, 'forward', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    call matrix(s, 'z', shape(z), s%dim, .false., z_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_det)) call values(s, 'log_det', size(log_det))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_det)) ld = c_loc(log_det)
      call from_c(s, c_forward_d(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, &
                                 c, c_stride, c_loc(z), z_stride, ld))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine forward_d

  !> x = f^-1(z) (latent to data) and log|det df^-1/dz| into log_det(n).
  subroutine inverse_d(self, z, x, log_det, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_double), intent(in), target, contiguous :: z(:, :)
    real(c_double), intent(inout), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous, optional :: log_det(:)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, z_stride, c_stride
    type(c_ptr) :: c, ld
    c = c_null_ptr
    ld = c_null_ptr
    c_stride = 0
    call begin(s, 'inverse', self, layout)
    call points(s, 'z', shape(z), s%dim, z_stride)
    call matrix(s, 'x', shape(x), s%dim, .false., x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_det)) call values(s, 'log_det', size(log_det))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_det)) ld = c_loc(log_det)
      call from_c(s, c_inverse_d(self%handle, int(s%n, c_size_t), s%layout, c_loc(z), z_stride, &
                                 c, c_stride, c_loc(x), x_stride, ld))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine inverse_d

  !> Samples x from uniforms u in (0, 1) of the same shape (the base distribution's quantiles,
  !> then f^-1), with log p(x) into log_prob(n).
  subroutine sample_from_uniforms_d(self, u, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_double), intent(in), target, contiguous :: u(:, :)
    real(c_double), intent(inout), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous, optional :: log_prob(:)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: u_stride, x_stride, c_stride
    type(c_ptr) :: c, lp
    c = c_null_ptr
    lp = c_null_ptr
    c_stride = 0
    call begin(s, 'sample_from_uniforms', self, layout)
    call points(s, 'u', shape(u), s%dim, u_stride)
    call matrix(s, 'x', shape(x), s%dim, .false., x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_prob)) call values(s, 'log_prob', size(log_prob))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_prob)) lp = c_loc(log_prob)
      call from_c(s, c_sample_from_uniforms_d(self%handle, int(s%n, c_size_t), s%layout, &
                                              c_loc(u), u_stride, c, c_stride, c_loc(x), &
                                              x_stride, lp))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine sample_from_uniforms_d

  !> Fills x(dim, n) with n samples from nflow's generator seeded by `seed` (the same seed, the
  !> same samples), with log p(x) into log_prob(n). A negative seed stands for the unsigned
  !> 64-bit value of the same bits.
  subroutine sample_d(self, seed, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer(c_int64_t), intent(in) :: seed
    real(c_double), intent(inout), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous, optional :: log_prob(:)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, c_stride
    type(c_ptr) :: c, lp
    c = c_null_ptr
    lp = c_null_ptr
    c_stride = 0
    call begin(s, 'sample', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_prob)) call values(s, 'log_prob', size(log_prob))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_prob)) lp = c_loc(log_prob)
      call from_c(s, c_sample_d(self%handle, int(s%n, c_size_t), seed, s%layout, c, c_stride, &
                                c_loc(x), x_stride, lp))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine sample_d

  subroutine sample_d32(self, seed, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer(c_int32_t), intent(in) :: seed
    real(c_double), intent(inout), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous, optional :: log_prob(:)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    character(len=:), allocatable :: text
    call sample_d(self, int(seed, c_int64_t), x, log_prob, context, layout, status, text)
    if (present(errmsg)) errmsg = text
  end subroutine sample_d32

  !> The score grad_x log p(x | context) into grad, of x's shape.
  subroutine score_d(self, x, grad, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_double), intent(in), target, contiguous :: x(:, :)
    real(c_double), intent(inout), target, contiguous :: grad(:, :)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, g_stride, c_stride
    type(c_ptr) :: c
    c = c_null_ptr
    c_stride = 0
    call begin(s, 'score', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    call matrix(s, 'grad', shape(grad), s%dim, .false., g_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      call from_c(s, c_score_d(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, &
                               c, c_stride, c_loc(grad), g_stride))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine score_d

  !> grad_context log p(x | context) into grad(context_dim, n).
  subroutine context_gradient_d(self, x, context, grad, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_double), intent(in), target, contiguous :: x(:, :)
    real(c_double), intent(in), target, contiguous :: context(:, :)
    real(c_double), intent(inout), target, contiguous :: grad(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, g_stride, c_stride
    call begin(s, 'context_gradient', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    call context_matrix(s, shape(context), c_stride)
    call matrix(s, 'grad', shape(grad), s%context_dim, .false., g_stride)
    if (s%st == NFLOW_OK .and. s%n > 0) then
      call from_c(s, c_context_gradient_d(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), &
                                          x_stride, c_loc(context), c_stride, c_loc(grad), &
                                          g_stride))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine context_gradient_d

  !> Fits the model to the points x by maximum likelihood; options as keywords (those given are
  !> passed, docs/training.md) or as a JSON object in options_json; final_nll gets the mean
  !> negative log-likelihood of x after training. The handle must not be in use by another thread.
  !> No points (n = 0): nothing is done, as in every call.
  subroutine fit_d(self, x, context, epochs, batch_size, learning_rate, seed, options_json, &
                   final_nll, layout, status, errmsg)
    class(nflow_model), intent(inout) :: self
    real(c_double), intent(in), target, contiguous :: x(:, :)
    real(c_double), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: epochs, batch_size
    real(c_double), intent(in), optional :: learning_rate
    integer, intent(in), optional :: seed
    character(len=*), intent(in), optional :: options_json
    real(c_double), intent(inout), target, optional :: final_nll
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, c_stride
    type(c_ptr) :: c, nll
    character(kind=c_char, len=:), allocatable, target :: json
    c = c_null_ptr
    nll = c_null_ptr
    c_stride = 0
    call begin(s, 'fit', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    call fit_options(s, json, epochs, batch_size, learning_rate, seed, options_json)
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(final_nll)) nll = c_loc(final_nll)
      call from_c(s, c_fit_d(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, c, &
                             c_stride, c_loc(json), nll))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine fit_d

  ! ---- evaluation, float: the double block above with c_float ----------------------------------

  !> log p(x | context) of the points x(dim, n) into log_prob(n).
  subroutine log_prob_f(self, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_float), intent(in), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous :: log_prob(:)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, c_stride
    type(c_ptr) :: c
    c = c_null_ptr
    c_stride = 0
    call begin(s, 'log_prob', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    call values(s, 'log_prob', size(log_prob))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      call from_c(s, c_log_prob_f(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, &
                                  c, c_stride, c_loc(log_prob)))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine log_prob_f

  !> z = f(x) (data to latent), z and x of the same shape, and log|det df/dx| into log_det(n).
  subroutine forward_f(self, x, z, log_det, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_float), intent(in), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous :: z(:, :)
    real(c_float), intent(inout), target, contiguous, optional :: log_det(:)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, z_stride, c_stride
    type(c_ptr) :: c, ld
    c = c_null_ptr
    ld = c_null_ptr
    c_stride = 0
    call begin(s, 'forward', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    call matrix(s, 'z', shape(z), s%dim, .false., z_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_det)) call values(s, 'log_det', size(log_det))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_det)) ld = c_loc(log_det)
      call from_c(s, c_forward_f(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, &
                                 c, c_stride, c_loc(z), z_stride, ld))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine forward_f

  !> x = f^-1(z) (latent to data) and log|det df^-1/dz| into log_det(n).
  subroutine inverse_f(self, z, x, log_det, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_float), intent(in), target, contiguous :: z(:, :)
    real(c_float), intent(inout), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous, optional :: log_det(:)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, z_stride, c_stride
    type(c_ptr) :: c, ld
    c = c_null_ptr
    ld = c_null_ptr
    c_stride = 0
    call begin(s, 'inverse', self, layout)
    call points(s, 'z', shape(z), s%dim, z_stride)
    call matrix(s, 'x', shape(x), s%dim, .false., x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_det)) call values(s, 'log_det', size(log_det))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_det)) ld = c_loc(log_det)
      call from_c(s, c_inverse_f(self%handle, int(s%n, c_size_t), s%layout, c_loc(z), z_stride, &
                                 c, c_stride, c_loc(x), x_stride, ld))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine inverse_f

  !> Samples x from uniforms u in (0, 1) of the same shape (the base distribution's quantiles,
  !> then f^-1), with log p(x) into log_prob(n).
  subroutine sample_from_uniforms_f(self, u, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_float), intent(in), target, contiguous :: u(:, :)
    real(c_float), intent(inout), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous, optional :: log_prob(:)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: u_stride, x_stride, c_stride
    type(c_ptr) :: c, lp
    c = c_null_ptr
    lp = c_null_ptr
    c_stride = 0
    call begin(s, 'sample_from_uniforms', self, layout)
    call points(s, 'u', shape(u), s%dim, u_stride)
    call matrix(s, 'x', shape(x), s%dim, .false., x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_prob)) call values(s, 'log_prob', size(log_prob))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_prob)) lp = c_loc(log_prob)
      call from_c(s, c_sample_from_uniforms_f(self%handle, int(s%n, c_size_t), s%layout, &
                                              c_loc(u), u_stride, c, c_stride, c_loc(x), &
                                              x_stride, lp))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine sample_from_uniforms_f

  !> Fills x(dim, n) with n samples from nflow's generator seeded by `seed` (the same seed, the
  !> same samples), with log p(x) into log_prob(n). A negative seed stands for the unsigned
  !> 64-bit value of the same bits.
  subroutine sample_f(self, seed, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer(c_int64_t), intent(in) :: seed
    real(c_float), intent(inout), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous, optional :: log_prob(:)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, c_stride
    type(c_ptr) :: c, lp
    c = c_null_ptr
    lp = c_null_ptr
    c_stride = 0
    call begin(s, 'sample', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (present(log_prob)) call values(s, 'log_prob', size(log_prob))
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(log_prob)) lp = c_loc(log_prob)
      call from_c(s, c_sample_f(self%handle, int(s%n, c_size_t), seed, s%layout, c, c_stride, &
                                c_loc(x), x_stride, lp))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine sample_f

  subroutine sample_f32(self, seed, x, log_prob, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    integer(c_int32_t), intent(in) :: seed
    real(c_float), intent(inout), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous, optional :: log_prob(:)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    character(len=:), allocatable :: text
    call sample_f(self, int(seed, c_int64_t), x, log_prob, context, layout, status, text)
    if (present(errmsg)) errmsg = text
  end subroutine sample_f32

  !> The score grad_x log p(x | context) into grad, of x's shape.
  subroutine score_f(self, x, grad, context, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_float), intent(in), target, contiguous :: x(:, :)
    real(c_float), intent(inout), target, contiguous :: grad(:, :)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, g_stride, c_stride
    type(c_ptr) :: c
    c = c_null_ptr
    c_stride = 0
    call begin(s, 'score', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    call matrix(s, 'grad', shape(grad), s%dim, .false., g_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      call from_c(s, c_score_f(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, &
                               c, c_stride, c_loc(grad), g_stride))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine score_f

  !> grad_context log p(x | context) into grad(context_dim, n).
  subroutine context_gradient_f(self, x, context, grad, layout, status, errmsg)
    class(nflow_model), intent(in) :: self
    real(c_float), intent(in), target, contiguous :: x(:, :)
    real(c_float), intent(in), target, contiguous :: context(:, :)
    real(c_float), intent(inout), target, contiguous :: grad(:, :)
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, g_stride, c_stride
    call begin(s, 'context_gradient', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    call context_matrix(s, shape(context), c_stride)
    call matrix(s, 'grad', shape(grad), s%context_dim, .false., g_stride)
    if (s%st == NFLOW_OK .and. s%n > 0) then
      call from_c(s, c_context_gradient_f(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), &
                                          x_stride, c_loc(context), c_stride, c_loc(grad), &
                                          g_stride))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine context_gradient_f

  !> Fits the model to the points x by maximum likelihood; options as keywords (those given are
  !> passed, docs/training.md) or as a JSON object in options_json; final_nll gets the mean
  !> negative log-likelihood of x after training. The handle must not be in use by another thread.
  !> No points (n = 0): nothing is done, as in every call.
  subroutine fit_f(self, x, context, epochs, batch_size, learning_rate, seed, options_json, &
                   final_nll, layout, status, errmsg)
    class(nflow_model), intent(inout) :: self
    real(c_float), intent(in), target, contiguous :: x(:, :)
    real(c_float), intent(in), target, contiguous, optional :: context(:, :)
    integer, intent(in), optional :: epochs, batch_size
    real(c_double), intent(in), optional :: learning_rate
    integer, intent(in), optional :: seed
    character(len=*), intent(in), optional :: options_json
    real(c_float), intent(inout), target, optional :: final_nll
    integer, intent(in), optional :: layout
    integer, intent(out), optional :: status
    character(len=:), allocatable, intent(out), optional :: errmsg
    type(call_state) :: s
    integer(c_size_t) :: x_stride, c_stride
    type(c_ptr) :: c, nll
    character(kind=c_char, len=:), allocatable, target :: json
    c = c_null_ptr
    nll = c_null_ptr
    c_stride = 0
    call begin(s, 'fit', self, layout)
    call points(s, 'x', shape(x), s%dim, x_stride)
    if (present(context)) call context_matrix(s, shape(context), c_stride)
    if (.not. present(context)) call no_context(s)
    call fit_options(s, json, epochs, batch_size, learning_rate, seed, options_json)
    if (s%st == NFLOW_OK .and. s%n > 0) then
      if (present(context)) c = c_loc(context)
      if (present(final_nll)) nll = c_loc(final_nll)
      call from_c(s, c_fit_f(self%handle, int(s%n, c_size_t), s%layout, c_loc(x), x_stride, c, &
                             c_stride, c_loc(json), nll))
    end if
    if (present(errmsg)) errmsg = message(s)
    call finish(s, status)
  end subroutine fit_f

end module nflow
