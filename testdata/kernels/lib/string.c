/* The few string functions the kernels (and gcc) need. */
#include "kernel.h"

void *memset(void *d, int c, size_t n)
{
	u8 *p = d;

	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *p = d;
	const u8 *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	u8 *p = d;
	const u8 *q = s;

	if (p < q)
		return memcpy(d, s, n);
	while (n--)
		p[n] = q[n];
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *p = a, *q = b;

	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p - *q;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (u8)*a - (u8)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

static int digit(char c, int base)
{
	int d;

	if (c >= '0' && c <= '9')
		d = c - '0';
	else if (c >= 'a' && c <= 'f')
		d = c - 'a' + 10;
	else if (c >= 'A' && c <= 'F')
		d = c - 'A' + 10;
	else
		return -1;
	return d < base ? d : -1;
}

size_t parse_u64(const char *s, size_t n, u64 *out)
{
	size_t i = 0;
	int base = 10;
	u64 v = 0;

	if (n >= 3 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digit(s[2], 16) >= 0) {
		base = 16;
		i = 2;
	}
	size_t start = i;
	for (; i < n; i++) {
		int d = digit(s[i], base);
		if (d < 0)
			break;
		v = v * base + d;
	}
	if (i == start)
		return 0;
	*out = v;
	return i;
}

size_t parse_size(const char *s, size_t n, u64 *out)
{
	size_t i = parse_u64(s, n, out);

	if (i && i < n) {
		switch (s[i]) {
		case 'k':
		case 'K':
			*out <<= 10;
			i++;
			break;
		case 'm':
		case 'M':
			*out <<= 20;
			i++;
			break;
		case 'g':
		case 'G':
			*out <<= 30;
			i++;
			break;
		}
	}
	return i;
}
