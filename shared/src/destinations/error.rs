//! Errors building a destination. A destination's answers are not errors:
//! they are record outcomes (see `util::outcome`).

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("destination `{destination}`: {message}")]
    Setup {
        destination: String,
        message: String,
    },
}
