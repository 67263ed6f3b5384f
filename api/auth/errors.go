package auth

import (
	"github.com/fvescrow/fvescrow/escrow"
)

// Errors of authentication; ErrForbidden and ErrBadRequest are escrow's, so
// the one error mapping in api covers them.
var (
	ErrUnauthenticated = escrow.ErrUnauthenticated
	ErrForbidden       = escrow.ErrForbidden
	ErrBadRequest      = escrow.ErrInvalid
)
