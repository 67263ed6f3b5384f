/*
 * icu_harness: full-string matching with the real ICU regex engine, for
 * icuregex's differential test (icu_differential_test.go). Built by
 * scripts/prereqs.sh:
 *
 *   gcc -O2 -o icu-harness icu_harness.c $(pkg-config --cflags --libs icu-i18n)
 *
 * Input, one case per line: hex(pattern) TAB hex(subject) LF, both UTF-8
 * encoded as lowercase or uppercase hex so that tabs, newlines, NULs and any
 * Unicode survive. Output, one line per input line:
 *
 *   1            the whole subject matches (uregex_matches, flags 0: what
 *                NSPredicate MATCHES and ICU's matches() do)
 *   0            it does not
 *   E <name>     uregex_open refused the pattern (U_REGEX_... error name)
 *   X <reason>   the case could not be run (bad input line, invalid UTF-8,
 *                an error while matching such as U_REGEX_TIME_OUT)
 *
 * uregex_open refuses a pattern length of 0 outright, so the empty pattern
 * is passed as a NUL-terminated "" (length -1), which ICU compiles.
 * Consecutive lines with the same pattern reuse its compiled form.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/uregex.h>
#include <unicode/ustring.h>

static int hexval(int c) {
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* unhex decodes n hex digits at s into out (n/2 bytes); -1 if malformed. */
static int unhex(const char *s, size_t n, char *out) {
	if (n % 2) return -1;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0) return -1;
		out[i / 2] = (char)(hi << 4 | lo);
	}
	return (int)(n / 2);
}

/* toUTF16 converts n bytes of UTF-8 into a new NUL-terminated UTF-16
 * buffer; a UTF-16 string never has more code units than its UTF-8 form
 * has bytes. Returns NULL (with *status set) on ill-formed UTF-8. */
static UChar *toUTF16(const char *s, int32_t n, int32_t *len, UErrorCode *status) {
	UChar *buf = malloc(sizeof(UChar) * ((size_t)n + 1));
	if (buf == NULL) {
		*status = U_MEMORY_ALLOCATION_ERROR;
		return NULL;
	}
	u_strFromUTF8(buf, n + 1, len, s, n, status);
	if (U_FAILURE(*status)) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* The last pattern compiled: its hex text, and the regex or the error. */
static char *lastHex;
static size_t lastLen;
static URegularExpression *lastRe;
static UErrorCode lastErr;

/* compile sets lastRe or lastErr for the pattern hex[0:n]; it returns 0,
 * or -1 after printing an X line. */
static int compile(const char *hex, size_t n) {
	if (lastHex != NULL && lastLen == n && memcmp(lastHex, hex, n) == 0) {
		return 0;
	}
	if (lastRe != NULL) uregex_close(lastRe);
	free(lastHex);
	lastRe = NULL;
	lastErr = U_ZERO_ERROR;
	lastHex = NULL;

	int rc = -1;
	char *pat8 = malloc(n / 2 + 1);
	UChar *pat = NULL;
	int32_t patLen = 0;
	int pl;
	UParseError pe;
	UErrorCode status = U_ZERO_ERROR;
	if (pat8 == NULL) {
		puts("X out of memory");
		goto out;
	}
	if ((pl = unhex(hex, n, pat8)) < 0) {
		puts("X bad hex");
		goto out;
	}
	if ((pat = toUTF16(pat8, pl, &patLen, &status)) == NULL) {
		printf("X pattern: %s\n", u_errorName(status));
		goto out;
	}
	lastRe = uregex_open(pat, patLen > 0 ? patLen : -1, 0, &pe, &status);
	if (U_FAILURE(status)) {
		lastRe = NULL;
		lastErr = status;
	} else {
		/* Bound catastrophic backtracking; ICU's unit is roughly a millisecond. */
		uregex_setTimeLimit(lastRe, 5000, &status);
		if (U_FAILURE(status)) {
			printf("X setTimeLimit: %s\n", u_errorName(status));
			uregex_close(lastRe);
			lastRe = NULL;
			goto out;
		}
	}
	if ((lastHex = malloc(n + 1)) == NULL) {
		puts("X out of memory");
		goto out;
	}
	memcpy(lastHex, hex, n);
	lastLen = n;
	rc = 0;
out:
	free(pat);
	free(pat8);
	return rc;
}

static void run(char *line, size_t n) {
	char *tab = memchr(line, '\t', n);
	if (tab == NULL) {
		puts("X no tab");
		return;
	}
	size_t pn = (size_t)(tab - line), sn = n - pn - 1;
	char *sub8 = NULL;
	UChar *sub = NULL;
	int32_t subLen = 0;
	int sl;
	UErrorCode status = U_ZERO_ERROR;

	if (compile(line, pn) < 0) return;
	if (lastRe == NULL) {
		printf("E %s\n", u_errorName(lastErr));
		return;
	}
	if ((sub8 = malloc(sn / 2 + 1)) == NULL) {
		puts("X out of memory");
		goto out;
	}
	if ((sl = unhex(tab + 1, sn, sub8)) < 0) {
		puts("X bad hex");
		goto out;
	}
	if ((sub = toUTF16(sub8, sl, &subLen, &status)) == NULL) {
		printf("X subject: %s\n", u_errorName(status));
		goto out;
	}
	uregex_setText(lastRe, sub, subLen, &status);
	if (U_FAILURE(status)) {
		printf("X setText: %s\n", u_errorName(status));
		goto out;
	}
	UBool m = uregex_matches(lastRe, 0, &status);
	if (U_FAILURE(status)) {
		printf("X matches: %s\n", u_errorName(status));
		goto out;
	}
	puts(m ? "1" : "0");
out:
	/* The regex keeps a pointer to the text: detach it before freeing. */
	if (lastRe != NULL) {
		static const UChar empty[1] = {0};
		UErrorCode ignored = U_ZERO_ERROR;
		uregex_setText(lastRe, empty, 0, &ignored);
	}
	free(sub);
	free(sub8);
}

int main(void) {
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) != -1) {
		if (n > 0 && line[n - 1] == '\n') n--;
		run(line, (size_t)n);
		if (fflush(stdout) != 0) return 1;
	}
	free(line);
	if (lastRe != NULL) uregex_close(lastRe);
	free(lastHex);
	return ferror(stdin) ? 1 : 0;
}
