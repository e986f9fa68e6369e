use std::pin::Pin;
use std::sync::LazyLock;

use arrow_flight::decode::FlightRecordBatchStream;
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
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
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
/// statements are supported (JDBC prepares every query), with parameters:
/// binding values answers a new handle that carries them.
#[derive(Clone)]
pub struct FlightSqlServer {
    analytics: Analytics,
}

impl FlightSqlServer {
    pub fn new(analytics: Analytics) -> Self {
        FlightSqlServer { analytics }
    }

    /// Plans a statement with its bound parameter values, if any: a wrong
    /// count or type of values fails here with DataFusion's message.
    async fn plan(&self, statement: &Prepared) -> Result<DataFrame, Status> {
        let df = self.analytics.plan(&number_placeholders(&statement.sql)).await?;
        match &statement.params {
            None => Ok(df),
            Some(batch) => {
                let values = (0..batch.num_columns())
                    .map(|i| ScalarValue::try_from_array(batch.column(i), 0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Status::invalid_argument(format!("cannot read the parameter values: {e}")))?;
                df.with_param_values(values).map_err(|e| Status::from(crate::Error::from(e)))
            }
        }
    }

    async fn schema_of(&self, statement: &Prepared) -> Result<SchemaRef, Status> {
        Ok(self.plan(statement).await?.schema().inner().clone())
    }

    async fn execute(&self, statement: &Prepared) -> Result<Response<DoGetStream>, Status> {
        let stream =
            self.plan(statement).await?.execute_stream().await.map_err(|e| Status::from(crate::Error::from(e)))?;
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

/// `?` placeholders (the DB-API's and JDBC's style) numbered `$1`, `$2`, …
/// in order, as DataFusion names them; `?` inside quotes stays as it is.
/// SQL the tokenizer rejects is returned unchanged, for the planner to
/// explain.
fn number_placeholders(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return sql.to_string() };
    let mut n = 0;
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                format!("${n}")
            }
            t => t.to_string(),
        })
        .collect()
}

/// Starts a prepared-statement handle that carries bound parameter values
/// after its SQL (a plain handle is the SQL text, which never starts with NUL).
const PARAMS_MAGIC: &[u8] = b"\0claw-params-v1\0";

/// A statement as its handle carries it: the SQL and, once the client has
/// bound them (`DoPut`), one row of parameter values for `$1`, `$2`, … (or `?`).
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    sql: String,
    params: Option<RecordBatch>,
}

impl Prepared {
    fn sql(sql: String) -> Prepared {
        Prepared { sql, params: None }
    }

    /// `MAGIC`, the SQL's length (u32 BE), the SQL, then the values as an
    /// Arrow IPC stream.
    fn encode(&self) -> Result<Bytes, Status> {
        let Some(params) = &self.params else { return Ok(self.sql.clone().into()) };
        let sql_len =
            u32::try_from(self.sql.len()).map_err(|_| Status::invalid_argument("the SQL text is too long"))?;
        let ipc = crate::batches_to_ipc(&params.schema(), std::slice::from_ref(params))?;
        let mut out = Vec::with_capacity(PARAMS_MAGIC.len() + 4 + self.sql.len() + ipc.len());
        out.extend_from_slice(PARAMS_MAGIC);
        out.extend_from_slice(&sql_len.to_be_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        out.extend_from_slice(&ipc);
        Ok(out.into())
    }

    fn decode(handle: &Bytes) -> Result<Prepared, Status> {
        let Some(rest) = handle.strip_prefix(PARAMS_MAGIC) else { return Ok(Prepared::sql(handle_sql(handle)?)) };
        let damaged = |what: &str| Status::invalid_argument(format!("prepared statement handle is damaged: {what}"));
        let len = rest.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).ok_or_else(|| damaged("no SQL length"))?;
        let len = u32::from_be_bytes(len) as usize;
        let sql = rest.get(4..4 + len).ok_or_else(|| damaged("the SQL is cut short"))?;
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| damaged("the SQL is not UTF-8"))?;
        let ipc = &rest[4 + len..];
        let reader = StreamReader::try_new(ipc, None).map_err(|e| damaged(&e.to_string()))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| damaged(&e.to_string()))?;
        match <[RecordBatch; 1]>::try_from(batches) {
            Ok([params]) => Ok(Prepared { sql, params: Some(params) }),
            Err(_) => Err(damaged("expected one batch of parameter values")),
        }
    }
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
        let schema = self.schema_of(&Prepared::sql(query.query.clone())).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into() }.as_any().encode_to_vec();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(&Prepared::sql(handle_sql(&ticket.statement_handle)?)).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self.schema_of(&Prepared::sql(query.query.clone())).await?;
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
        let schema = self.schema_of(&Prepared::decode(&cmd.prepared_statement_handle)?).await?;
        flight_info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(&Prepared::decode(&cmd.prepared_statement_handle)?).await
    }

    /// Binds parameter values: one row, one column per placeholder. The
    /// answer is a new handle carrying the SQL and the values, so the
    /// server stays stateless.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let Prepared { sql, .. } = Prepared::decode(&query.prepared_statement_handle)?;
        // `into_peekable` keeps the first message (the schema), which the
        // dispatcher peeked at to route the call.
        let data = request.into_inner().into_peekable().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            FlightRecordBatchStream::new_from_flight_data(data).try_collect().await.map_err(Status::from)?;
        let Some(first) = batches.first() else {
            return Err(Status::invalid_argument("no parameter values were sent"));
        };
        let params = concat_batches(&first.schema(), &batches)
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameter values: {e}")))?;
        if params.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "{} rows of parameter values were sent; a query takes exactly one",
                params.num_rows()
            )));
        }
        let bound = Prepared { sql, params: Some(params) };
        self.plan(&bound).await?;
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(bound.encode()?) })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders_outside_quotes() {
        assert_eq!(
            number_placeholders("SELECT seq FROM events WHERE seq > ? AND node = ? AND kind <> '?'"),
            "SELECT seq FROM events WHERE seq > $1 AND node = $2 AND kind <> '?'"
        );
        assert_eq!(number_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(number_placeholders("SELECT '?"), "SELECT '?", "left for the planner to reject");
    }

    #[test]
    fn handles_carry_the_sql_and_the_bound_values() {
        let plain = Prepared::sql("SELECT 1".into());
        assert_eq!(plain.encode().expect("encode"), Bytes::from("SELECT 1"), "a plain handle is the SQL text");
        assert_eq!(Prepared::decode(&plain.encode().expect("encode")).expect("decode"), plain);

        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, false),
            Field::new("$2", DataType::Utf8, false),
        ]));
        let values = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![7])), Arc::new(StringArray::from(vec!["gpu-a"]))],
        )
        .expect("batch");
        let bound =
            Prepared { sql: "SELECT seq FROM events WHERE seq > $1 AND node = $2".into(), params: Some(values) };
        let handle = bound.encode().expect("encode");
        assert_eq!(Prepared::decode(&handle).expect("decode"), bound);

        for cut in [PARAMS_MAGIC.len() + 2, PARAMS_MAGIC.len() + 10, handle.len() - 3] {
            let err = Prepared::decode(&handle.slice(..cut)).expect_err("a damaged handle");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains("handle is damaged"), "{}", err.message());
        }
    }
}
