package web

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fvescrow/fvescrow/api/auth"
	"github.com/fvescrow/fvescrow/escrow"
)

// loginCookie carries the sign-in form's CSRF token (double submit): a
// session's own token only exists after sign-in. The __Host- prefix keeps
// a sibling subdomain from planting one.
const loginCookie = "__Host-fvescrow-login"

type loginPage struct {
	Username   string
	Next       string
	Token      string // the double-submit value, also in the cookie
	Change     bool   // the one-time password must be replaced
	SignedOut  bool
	SSO        string // SSO login path, if configured
	MinNewPass int
}

// loginToken returns the browser's sign-in CSRF token, setting a new one
// when it has none.
func loginToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	tok := auth.NewSecret("")
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(time.Hour / time.Second)})
	return tok
}

func (u *UI) loginData(w http.ResponseWriter, r *http.Request) loginPage {
	lp := loginPage{Token: loginToken(w, r), Next: safeNext(r.FormValue("next")), MinNewPass: auth.MinPasswordLength}
	if u.cfg.SSO != nil {
		lp.SSO = u.cfg.SSO.LoginPath() + "?return_to=" + url.QueryEscape(lp.Next)
	}
	return lp
}

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	if principal(r) != nil {
		http.Redirect(w, r, home, http.StatusSeeOther)
		return
	}
	lp := u.loginData(w, r)
	lp.SignedOut = r.URL.Query().Get("out") == "1"
	u.render(w, r, http.StatusOK, "login", "Sign in", lp)
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	lp := u.loginData(w, r)
	c, err := r.Cookie(loginCookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("login_csrf"))) != 1 {
		// A stale form (cookie expired) or a cross-site post: ask again.
		u.render(w, r, http.StatusForbidden, "login", "Sign in", lp, withError("The sign-in form expired. Please try again."))
		return
	}
	lp.Username = strings.TrimSpace(r.PostFormValue("username"))
	password, code := r.PostFormValue("password"), r.PostFormValue("totp")
	newPass := r.PostFormValue("new_password")
	if r.PostFormValue("change") == "1" {
		lp.Change = true
		if newPass == "" || newPass != r.PostFormValue("new_password2") {
			u.render(w, r, http.StatusBadRequest, "login", "Change your password", lp, withError("The new passwords do not match."))
			return
		}
	}
	user, err := u.d.Local.Verify(r.Context(), lp.Username, password, code, newPass)
	switch {
	case errors.Is(err, auth.ErrPasswordChange):
		lp.Change = true
		u.render(w, r, http.StatusOK, "login", "Change your password", lp,
			withFlash("Your password is a one-time password. Enter it again and choose a new one."))
		return
	case errors.Is(err, escrow.ErrUnauthenticated):
		u.render(w, r, http.StatusUnauthorized, "login", "Sign in", lp, withError("Wrong user name, password or code."))
		return
	case err != nil:
		status, msg := u.classify(r, err)
		u.render(w, r, status, "login", "Sign in", lp, withError(msg))
		return
	}
	if _, err := u.d.Auth.NewSession(r.Context(), w, user, user.Roles, user.Groups, ""); err != nil {
		u.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, lp.Next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	s, ok := u.d.Auth.EndSession(r.Context(), w, r)
	if ok {
		if _, err := u.d.Audit.AppendAudit(r.Context(), escrow.Event{Time: time.Now(), Actor: p.Actor(), Action: auth.ActionLogout,
			Detail: map[string]string{"method": s.Source}}); err != nil {
			u.log.WarnContext(r.Context(), "audit logout", "err", err)
		}
	}
	if ok && u.cfg.SSO != nil && s.Source == "oidc" {
		if to := u.cfg.SSO.LogoutURL(s); to != "" {
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
	}
	http.Redirect(w, r, "/ui/login?out=1", http.StatusSeeOther)
}

type passwordPage struct {
	Local      bool
	MinNewPass int
}

func (u *UI) passwordForm(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	u.render(w, r, http.StatusOK, "password", "Change password", passwordPage{Local: strings.HasPrefix(p.UserID, "local:") && p.Method == "session",
		MinNewPass: auth.MinPasswordLength})
}

func (u *UI) changePassword(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	pp := passwordPage{Local: strings.HasPrefix(p.UserID, "local:") && p.Method == "session", MinNewPass: auth.MinPasswordLength}
	if !pp.Local {
		u.fail(w, r, escrow.ErrNotFound)
		return
	}
	if r.PostFormValue("new_password") != r.PostFormValue("new_password2") {
		u.render(w, r, http.StatusBadRequest, "password", "Change password", pp, withError("The new passwords do not match."))
		return
	}
	if err := u.d.Local.ChangePassword(r.Context(), p.UserID, r.PostFormValue("password"), r.PostFormValue("new_password")); err != nil {
		status, msg := u.classify(r, err)
		u.render(w, r, status, "password", "Change password", pp, withError(msg))
		return
	}
	// Changing the password ends every session of the account, this one too.
	u.d.Auth.EndSession(r.Context(), w, r)
	http.Redirect(w, r, "/ui/login?out=1", http.StatusSeeOther)
}
