//! `Content-Type` from a file name's extension: a small table of the
//! types a web site serves (nginx's `mime.types`, the common part), not
//! `mime_guess` (its thousand-entry table, a build script and the
//! `unicase` crate, for types no static site needs). Text types say
//! UTF-8; anything unknown is `application/octet-stream` (as nginx's
//! `default_type`), which browsers do not render.

/// Extensions (lowercase) and their types, sorted for a binary search.
const TYPES: &[(&str, &str)] = &[
    ("7z", "application/x-7z-compressed"),
    ("avif", "image/avif"),
    ("bin", "application/octet-stream"),
    ("bmp", "image/bmp"),
    ("css", "text/css; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("gif", "image/gif"),
    ("gz", "application/gzip"),
    ("htm", "text/html; charset=utf-8"),
    ("html", "text/html; charset=utf-8"),
    ("ico", "image/x-icon"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("js", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("jsonld", "application/ld+json"),
    ("map", "application/json"),
    ("md", "text/markdown; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
    ("oga", "audio/ogg"),
    ("ogg", "audio/ogg"),
    ("ogv", "video/ogg"),
    ("otf", "font/otf"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("rss", "application/rss+xml"),
    ("svg", "image/svg+xml"),
    ("tar", "application/x-tar"),
    ("toml", "application/toml"),
    ("ttf", "font/ttf"),
    ("txt", "text/plain; charset=utf-8"),
    ("wasm", "application/wasm"),
    ("wav", "audio/wav"),
    ("webm", "video/webm"),
    ("webmanifest", "application/manifest+json"),
    ("webp", "image/webp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("zip", "application/zip"),
    ("zst", "application/zstd"),
];

/// The type for the file named `name` (its last extension).
pub(crate) fn content_type(name: &[u8]) -> &'static str {
    let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let ext = match file.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &file[dot + 1..],
        _ => return DEFAULT,
    };
    if ext.len() > 16 {
        return DEFAULT;
    }
    // Lower-cased on the stack.
    let mut lower = [0u8; 16];
    let lower = &mut lower[..ext.len()];
    lower.copy_from_slice(ext);
    lower.make_ascii_lowercase();
    TYPES
        .binary_search_by(|(e, _)| e.as_bytes().cmp(lower))
        .map_or(DEFAULT, |i| TYPES[i].1)
}

const DEFAULT: &str = "application/octet-stream";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted() {
        assert!(TYPES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn by_extension() {
        assert_eq!(content_type(b"a/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"APP.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type(b"x.tar.gz"), "application/gzip");
        assert_eq!(content_type(b"logo.svg"), "image/svg+xml");
        assert_eq!(content_type(b"README"), DEFAULT);
        assert_eq!(content_type(b"a.d/file"), DEFAULT);
        assert_eq!(content_type(b"x.unknown"), DEFAULT);
    }
}
