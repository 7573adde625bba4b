//! Connections a command needs, opened once: state database, queue, config.

use apalis_redis::{ConnectionManager, RedisStorage};
use ebb_shared::config::Config;
use ebb_shared::queue::{self, WriteBatchTask};
use sqlx::PgPool;

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

    pub async fn queue(
        &self,
    ) -> Result<(ConnectionManager, RedisStorage<WriteBatchTask>), PlannerError> {
        let conn = queue::connect(&self.config.state).await?;
        let storage = queue::storage(conn.clone(), &self.config.state, &self.config.worker, 1);
        Ok((conn, storage))
    }
}
