//! Request path normalisation, applied once before route matching. The backend receives the
//! normalised path (and the original query), so the path that was matched is the path served.
//!
//! [`normalize_path`] does three things, in this order:
//!
//! 1. Percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded: `/%61dmin` becomes `/admin`. Every other escape is kept, with its hex digits
//!    upper-cased (`%2f` becomes `%2F`): a decoded `/` would change the segments and so the
//!    route, which is how path-confusion attacks start.
//! 2. Repeated slashes are merged: `//admin///x` becomes `/admin/x`.
//! 3. Dot segments are resolved as RFC 3986 §5.2.4 `remove_dot_segments` does, never above the
//!    root: `/a/./b/../c` becomes `/a/c`, `/../../etc` becomes `/etc`. Because step 1 runs
//!    first, `%2e%2e` counts as `..`.
//!
//! A trailing slash is kept (`/a/b/` stays as is, `/a/b/..` becomes `/a/`). Matching is
//! case-sensitive, so `/ADMIN` is not `/admin`. Paths that need none of this (nearly all) are
//! returned borrowed, without allocating.
//!
//! Route matching then ignores path parameters ([`match_path`]): `/admin;jsessionid=1/x` is
//! matched as `/admin/x`, because servlet containers and others read it so, and a policy on
//! `/admin` must hold for it. The backend still receives the parameters.

use std::borrow::Cow;

/// True for RFC 3986 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when `path` is already normal: no escapes, no empty segment, no dot segment. One pass
/// over the bytes: this runs on every request, and substring searches cost more to set up than
/// a short path takes to scan.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => return false,
            b'/' => match bytes.get(i + 1) {
                // An empty segment.
                Some(b'/') => return false,
                // `.` or `..` as a whole segment.
                Some(b'.') => match bytes.get(i + 2) {
                    None | Some(b'/') => return false,
                    Some(b'.') if matches!(bytes.get(i + 3), None | Some(b'/')) => return false,
                    _ => {}
                },
                _ => {}
            },
            _ => {}
        }
    }
    true
}

/// Normalises an absolute request path (see the module documentation). `path` must start
/// with `/`; the query is not part of it.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    // Step 1: decode unreserved escapes, upper-case the others.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            let c = hi << 4 | lo;
            if is_unreserved(c) {
                decoded.push(c as char);
            } else {
                decoded.push('%');
                decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        // Multi-byte UTF-8 is copied whole; `path` is a `str`, so slicing at `i` is sound once
        // we find the end of the character.
        let len = utf8_len(b);
        decoded.push_str(&path[i..i + len]);
        i += len;
    }
    // Steps 2 and 3 over the segments.
    let trailing_slash = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "."
        || decoded == "..";
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    Cow::Owned(normal)
}

/// The path routes are matched against: `path` (already normalised) without the `;params` of
/// its segments.
pub fn match_path(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or(""));
    }
    Cow::Owned(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/admin",
            "/a/b/",
            "/a.b/c..d/.e",
            "/x?y",
            "/.well-known",
            "/a/.../b",
            "/..x",
        ] {
            assert!(matches!(normalize_path(p), Cow::Borrowed(_)), "{p}");
        }
        for p in [
            "/.", "/..", "/a/./b", "/a/../b", "/a/..", "//", "/a//b", "/%41", "/a/.",
        ] {
            assert!(!is_normal(p), "{p}");
        }
    }

    #[test]
    fn cases() {
        let cases = [
            ("/admin/../admin", "/admin"),
            ("//admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%61%64%6D%69%6e", "/admin"),
            ("/ADMIN", "/ADMIN"),
            ("/a/./b/../c", "/a/c"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a//b///c/", "/a/b/c/"),
            ("/%2e%2e/secret", "/secret"),
            ("/a/%2E/b", "/a/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/..", "/"),
            ("/%7euser", "/~user"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/café/./x", "/café/x"),
            ("/100%", "/100%"),
            ("/%zz", "/%zz"),
            ("/%4", "/%4"),
            ("/..", "/"),
            ("//", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "{input}");
        }
    }

    #[test]
    fn path_parameters_are_not_matched() {
        assert_eq!(match_path("/admin;x"), "/admin");
        assert_eq!(match_path("/admin;a=1;b=2/users;v=3"), "/admin/users");
        assert_eq!(match_path("/;x/a"), "//a");
        assert!(matches!(match_path("/plain/path"), Cow::Borrowed(_)));
    }

    #[test]
    fn idempotent() {
        for p in ["/a/../b//c/./d/", "/%41%2f/..", "/x/%2e/y"] {
            let once = normalize_path(p).into_owned();
            assert_eq!(normalize_path(&once), once);
        }
    }
}
