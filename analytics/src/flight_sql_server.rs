use std::pin::Pin;
use std::sync::LazyLock;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, TryStreamExt};
use prost::bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::Analytics;

type DoGetStream = <FlightSqlServer as FlightService>::DoGetStream;

/// What `GetSqlInfo` answers: who we are, and that we only read.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "clawbernetes");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    // The builder only fails on a value type it cannot encode; these are all strings and bools.
    b.build().expect("static SQL info encodes")
});

/// The Arrow Flight SQL endpoint: standard Arrow clients (ADBC, JDBC, the
/// `arrow-flight` client) send SQL and get Arrow batches back.
///
/// It keeps no state between calls: a ticket or prepared-statement handle
/// is the SQL text itself, re-planned when it is fetched, so any member can
/// serve any ticket and nothing leaks when a client goes away. Prepared
/// statements without parameters are supported (JDBC prepares every query).
#[derive(Clone)]
pub struct FlightSqlServer {
    analytics: Analytics,
}

impl FlightSqlServer {
    pub fn new(analytics: Analytics) -> Self {
        FlightSqlServer { analytics }
    }

    async fn schema_of(&self, sql: &str) -> Result<SchemaRef, Status> {
        Ok(self.analytics.plan(sql).await?.schema().inner().clone())
    }

    async fn execute(&self, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let stream = self.analytics.query_stream(sql).await?;
        let schema = stream.schema();
        let batches = stream.map_err(|e| FlightError::ExternalError(Box::new(crate::Error::from(e))));
        Ok(data_stream(schema, batches))
    }

    /// The batch of a metadata command, built from the session's catalog.
    async fn catalog_batch(&self, what: Metadata) -> Result<RecordBatch, Status> {
        let ctx = self.analytics.session();
        let label = format!("{what:?}");
        let failed = |e: FlightError| Status::internal(format!("building the {label} answer failed: {e}"));
        let batch = match what {
            Metadata::Catalogs(cmd) => {
                let mut b = cmd.into_builder();
                ctx.catalog_names().iter().for_each(|c| b.append(c));
                b.build()
            }
            Metadata::Schemas(cmd) => {
                let mut b = cmd.into_builder();
                for c in ctx.catalog_names() {
                    let schemas = ctx.catalog(&c).map(|cat| cat.schema_names()).unwrap_or_default();
                    schemas.iter().for_each(|s| b.append(&c, s));
                }
                b.build()
            }
            Metadata::Tables(cmd) => {
                let mut b = cmd.into_builder();
                for c in ctx.catalog_names() {
                    let Some(cat) = ctx.catalog(&c) else { continue };
                    for s in cat.schema_names() {
                        let Some(schema) = cat.schema(&s) else { continue };
                        for t in schema.table_names() {
                            if let Ok(Some(table)) = schema.table(&t).await {
                                b.append(&c, &s, &t, table.table_type().to_string(), &table.schema())
                                    .map_err(&failed)?;
                            }
                        }
                    }
                }
                b.build()
            }
            Metadata::TableTypes(cmd) => {
                let mut b = cmd.into_builder();
                ["BASE TABLE", "VIEW"].iter().for_each(|t| b.append(t));
                b.build()
            }
            Metadata::SqlInfo(cmd) => cmd.into_builder(&SQL_INFO).build(),
        };
        batch.map_err(failed)
    }

    async fn metadata_info(
        &self,
        what: Metadata,
        ticket: Vec<u8>,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.catalog_batch(what).await?.schema();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn metadata_data(&self, what: Metadata) -> Result<Response<DoGetStream>, Status> {
        let batch = self.catalog_batch(what).await?;
        Ok(data_stream(batch.schema(), futures::stream::iter([Ok(batch)])))
    }
}

/// The metadata requests answered from the session's catalog.
#[derive(Debug)]
enum Metadata {
    Catalogs(CommandGetCatalogs),
    Schemas(CommandGetDbSchemas),
    Tables(CommandGetTables),
    TableTypes(CommandGetTableTypes),
    SqlInfo(CommandGetSqlInfo),
}

fn flight_info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the result schema failed: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn data_stream(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
    Response::new(Box::pin(stream))
}

fn handle_sql(handle: &Bytes) -> Result<String, Status> {
    String::from_utf8(handle.to_vec()).map_err(|_| Status::invalid_argument("statement handle is not UTF-8 SQL text"))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    /// Anyone may connect for now; authentication comes with the API's.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let reply = HandshakeResponse { protocol_version: 0, payload: Bytes::new() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema_of(&query.query).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into() }.as_any().encode_to_vec();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(&handle_sql(&ticket.statement_handle)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self.schema_of(&query.query).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into(),
            dataset_schema,
            parameter_schema: Bytes::new(),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema_of(&handle_sql(&cmd.prepared_statement_handle)?).await?;
        flight_info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(&handle_sql(&cmd.prepared_statement_handle)?).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        Err(Status::unimplemented("query parameters are not supported yet: put the values in the SQL text"))
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles carry their SQL, so there is nothing to free.
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(Metadata::Catalogs(query), ticket, request).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_data(Metadata::Catalogs(query)).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(Metadata::Schemas(query), ticket, request).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_data(Metadata::Schemas(query)).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(Metadata::Tables(query), ticket, request).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_data(Metadata::Tables(query)).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(Metadata::TableTypes(query), ticket, request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_data(Metadata::TableTypes(query)).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(Metadata::SqlInfo(query), ticket, request).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_data(Metadata::SqlInfo(query)).await
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlightSqlServer")
    }
}
