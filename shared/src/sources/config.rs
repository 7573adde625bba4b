//! [`SourceConfig`]: what every source type's typed config can do.

use std::fmt;

use futures::future::BoxFuture;

use super::error::SourceError;
use super::source::Source;
use crate::config::AsAny;

/// A source type's typed config, read from its `[sources.NAME]` table by
/// the parser its registry entry names.
pub trait SourceConfig: AsAny + fmt::Debug + Send + Sync {
    /// The `type` of its table.
    fn type_name(&self) -> &'static str;

    /// Connects to the warehouse; `name` is the source's name in config.
    fn connect<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>>;
}

impl<'a> dyn SourceConfig + 'a {
    /// The typed config of a source type, when it is of that type.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}
