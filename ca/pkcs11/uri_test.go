package pkcs11

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    URI
		wantErr bool
	}{
		{name: "token, object, module, pin file",
			in:   "pkcs11:token=ca;object=certmesh-int?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
			want: URI{Token: "ca", Object: "certmesh-int", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PinSource: "file:/run/pin"}},
		{name: "percent-encoded id and label",
			in:   "pkcs11:token=My%20Token;object=a%3Bb;id=%01%02;type=private?module-path=/m.so&pin-value=1234",
			want: URI{Token: "My Token", Object: "a;b", ID: []byte{1, 2}, ModulePath: "/m.so", PinValue: "1234"}},
		{name: "serial selects the token", in: "pkcs11:serial=abc?module-path=/m.so", want: URI{Serial: "abc", ModulePath: "/m.so"}},
		{name: "informational attributes and unknown query attributes are accepted",
			in:   "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2;token=t?module-name=softhsm2&module-path=/m.so",
			want: URI{Token: "t", ModulePath: "/m.so"}},
		{name: "not pkcs11", in: "file:/x", wantErr: true},
		{name: "no token", in: "pkcs11:object=k?module-path=/m.so", wantErr: true},
		{name: "no module", in: "pkcs11:token=t", wantErr: true},
		{name: "public key", in: "pkcs11:token=t;type=public?module-path=/m.so", wantErr: true},
		{name: "unknown path attribute", in: "pkcs11:token=t;label=x?module-path=/m.so", wantErr: true},
		{name: "pin from a command", in: "pkcs11:token=t?module-path=/m.so&pin-source=|cat", wantErr: true},
		{name: "bad escape", in: "pkcs11:token=%zz?module-path=/m.so", wantErr: true},
		{name: "attribute without value", in: "pkcs11:token?module-path=/m.so", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseURI(tt.in)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrBadURI)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			back, err := ParseURI(got.String())
			require.NoError(t, err)
			tt.want.PinValue = ""
			require.Equal(t, tt.want, back, "String round-trips, without the PIN")
		})
	}
}

func TestURIErrorsHideThePIN(t *testing.T) {
	_, err := ParseURI("pkcs11:object=k?pin-value=secret&module-path=/m.so")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret")
}

func TestPIN(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pin")
	require.NoError(t, os.WriteFile(f, []byte("1234\r\nignored\n"), 0o600))
	tests := []struct {
		name string
		uri  URI
		want string
	}{
		{name: "file, first line", uri: URI{PinSource: "file:" + f}, want: "1234"},
		{name: "value", uri: URI{PinValue: "99"}, want: "99"},
		{name: "none", uri: URI{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.uri.PIN()
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	_, err := URI{PinSource: "file:" + f + ".missing"}.PIN()
	require.Error(t, err)
}
