//! Everything that can be wrong with a config file.

use std::path::{Path, PathBuf};

/// Messages never contain interpolated values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}. Pass --config PATH or set EBB_CONFIG")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}{key}: {message}", location(path, *line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
    #[error("{key}: environment variable `{var}` is not set; export it or change the value")]
    MissingEnv { key: String, var: String },
    #[error("{key}: {message}")]
    Interpolation { key: String, message: String },
}

fn location(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}: ", path.display()),
        None => format!("{}: ", path.display()),
    }
}
