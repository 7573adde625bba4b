//! Connections a command needs, opened once: state database, queue, config.

use ebb_shared::config::Config;
use sqlx::PgPool;

use crate::enqueue::Queue;
use crate::error::PlannerError;

pub struct Context {
    pub config: Config,
    pub pool: PgPool,
}

impl Context {
    /// Connects to the state database and applies migrations.
    pub async fn open(config: Config) -> Result<Context, PlannerError> {
        let pool = ebb_shared::db::connect_and_migrate(&config.state.database_url, 8).await?;
        Ok(Context { config, pool })
    }

    pub async fn queue(&self) -> Result<Queue, PlannerError> {
        Ok(Queue::connect(&self.config.state, &self.config.worker).await?)
    }
}
