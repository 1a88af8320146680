//! An external Confluent-compatible schema registry (Confluent's, Redpanda's, Apicurio's, or
//! another Tidemark's), through schema_registry_converter. Schemas are fetched once per id and
//! cached; the ids are that registry's, so every tool pointed at it decodes our records.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::codec::SchemaSource;
use crate::{Error, Result};

pub struct ExternalRegistry {
    url: String,
    settings: SrSettings,
    /// Schemas by id, fetched or registered by this process.
    cache: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl ExternalRegistry {
    pub fn new(url: &str) -> ExternalRegistry {
        let url = url.trim_end_matches('/').to_string();
        ExternalRegistry {
            settings: SrSettings::new(url.clone()),
            url,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, what: &str, e: SRCError) -> Error {
        Error::Unavailable(format!("schema registry {}: {what}: {e}", self.url))
    }

    /// Register `text` under `subject` (the registry checks compatibility); returns its id.
    pub async fn register(&self, subject: &str, text: &str) -> Result<u32> {
        let schema = Schema::parse_str(text)
            .map_err(|e| Error::BadInput(format!("invalid schema for {subject}: {e}")))?;
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, text.to_string());
        let registered = post_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map_err(|e| self.err(&format!("register {subject}"), e))?;
        self.cache
            .write()
            .unwrap()
            .insert(registered.id, Arc::new(schema));
        Ok(registered.id)
    }

    /// The schema with `id`, from the cache or the registry.
    pub async fn fetch(&self, id: u32) -> Result<Arc<Schema>> {
        if let Some(s) = self.cache.read().unwrap().get(&id) {
            return Ok(s.clone());
        }
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(|e| self.err(&format!("schema {id}"), e))?;
        let schema = Arc::new(
            Schema::parse_str(&registered.schema)
                .map_err(|e| Error::Avro(format!("schema {id} from {}: {e}", self.url)))?,
        );
        self.cache.write().unwrap().insert(id, schema.clone());
        Ok(schema)
    }
}

impl SchemaSource for ExternalRegistry {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
        if let Some(s) = self.cache.read().unwrap().get(&id) {
            return Some(s.clone());
        }
        // Only a record written with a schema this process has not seen yet gets here. The
        // fetch blocks this thread; the runtime's other threads go on.
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let fetched = tokio::task::block_in_place(|| handle.block_on(self.fetch(id)));
        match fetched {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }
}
