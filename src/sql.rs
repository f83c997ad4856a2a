//! SQL text to executable kernels: `--where` predicates, `--select` lists and `--schema`
//! column lists.
//!
//! The text is parsed once with sqlparser, planned once into a DataFusion logical expression
//! against the input schema, type-coerced and simplified, then turned into a physical
//! expression that is evaluated on every batch. Nothing here touches data.
//!
//! ```text
//!   "amount > 100"  --parse-->  sqlparser AST  --plan-->  Expr  --coerce, simplify-->
//!   Expr  --create_physical_expr-->  Arc<dyn PhysicalExpr>   (evaluated per batch)
//! ```
//!
//! Identifiers are case-sensitive and match column names exactly as the input spells them;
//! function names are not (`LOWER(email)` and `lower(email)` are the same).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_common::config::ConfigOptions;
use datafusion_common::{DFSchema, TableReference, plan_err};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::planner::{ContextProvider, ExprPlanner};
use datafusion_expr::simplify::SimplifyContext;
use datafusion_expr::{AggregateUDF, Expr, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use datafusion_optimizer::simplify_expressions::ExprSimplifier;
use datafusion_physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion_sql::planner::{ParserOptions, PlannerContext, SqlToRel};
use datafusion_sql::sqlparser::ast::{self as sql_ast, SelectItem, Statement};
use datafusion_sql::sqlparser::dialect::GenericDialect;
use datafusion_sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// The scalar functions and SQL syntax planners available in expressions.
///
/// Holds DataFusion's string, math, date/time, unicode and regex functions; there are no
/// tables, aggregates or window functions, since every expression sees one row at a time.
#[derive(Debug)]
struct FunctionCatalog {
    functions: HashMap<String, Arc<ScalarUDF>>,
    planners: Vec<Arc<dyn ExprPlanner>>,
    options: ConfigOptions,
}

impl FunctionCatalog {
    fn new() -> Self {
        let mut functions = HashMap::new();
        for udf in datafusion_functions::all_default_functions() {
            for alias in udf.aliases() {
                functions.insert(alias.to_ascii_lowercase(), Arc::clone(&udf));
            }
            functions.insert(udf.name().to_ascii_lowercase(), udf);
        }
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions::datetime::planner::DatetimeFunctionPlanner),
            Arc::new(datafusion_functions::unicode::planner::UnicodeFunctionPlanner),
        ];
        FunctionCatalog {
            functions,
            planners,
            options: ConfigOptions::default(),
        }
    }
}

impl ContextProvider for FunctionCatalog {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion_common::Result<Arc<dyn TableSource>> {
        plan_err!("expressions cannot refer to tables (found `{name}`)")
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.functions.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, _name: &str) -> Option<Arc<AggregateUDF>> {
        None
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}

fn parser_options() -> ParserOptions {
    ParserOptions {
        enable_ident_normalization: false,
        map_string_types_to_utf8view: false,
        ..ParserOptions::new()
    }
}

/// One planned output column of a `select`.
#[derive(Debug, Clone)]
pub struct PlannedColumn {
    /// The kernel that computes the column from a batch.
    pub expr: Arc<dyn PhysicalExpr>,
    /// The output field: alias (or the expression's own name), type and nullability.
    pub field: Field,
}

/// Plans SQL text against one input schema.
pub struct SqlPlanner {
    catalog: FunctionCatalog,
    df_schema: DFSchema,
}

impl std::fmt::Debug for SqlPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPlanner")
            .field("schema", &self.df_schema)
            .finish()
    }
}

impl SqlPlanner {
    /// A planner for expressions over rows of `schema`.
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        let df_schema = DFSchema::try_from(Arc::clone(schema)).map_err(|err| Error::Schema {
            location: "input".to_owned(),
            message: err.to_string(),
        })?;
        Ok(SqlPlanner {
            catalog: FunctionCatalog::new(),
            df_schema,
        })
    }

    /// Plans a boolean predicate such as `status = 'active' AND amount > 100`.
    ///
    /// Fails when the text is not one SQL expression, names an unknown column or function,
    /// or is not boolean.
    pub fn predicate(&self, sql: &str) -> Result<Arc<dyn PhysicalExpr>> {
        let ast = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .and_then(|mut parser| {
                let expr = parser.parse_expr()?;
                parser.expect_token(&datafusion_sql::sqlparser::tokenizer::Token::EOF)?;
                Ok(expr)
            })
            .map_err(|err| sql_error(sql, err))?;
        let expr = self.plan(sql, ast)?;
        let data_type = self.data_type(sql, &expr)?;
        if data_type != DataType::Boolean && data_type != DataType::Null {
            return Err(Error::Sql {
                sql: sql.to_owned(),
                message: format!("a filter must be boolean, this expression is {data_type}"),
            });
        }
        self.physical(sql, &expr)
    }

    /// Plans a select list such as `id, lower(email) AS email, amount * 1.19 AS gross`.
    /// `*` stands for every input column.
    pub fn projection(&self, sql: &str) -> Result<Vec<PlannedColumn>> {
        let items = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .and_then(|mut parser| {
                let items = parser.parse_projection()?;
                parser.expect_token(&datafusion_sql::sqlparser::tokenizer::Token::EOF)?;
                Ok(items)
            })
            .map_err(|err| sql_error(sql, err))?;

        let mut columns = Vec::new();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(ast) => {
                    // An unaliased column keeps its name; any other expression is named by
                    // its SQL text, as the user wrote it (`amount + 1`).
                    let text = ast.to_string();
                    let expr = self.plan(sql, ast)?;
                    let name = match &expr {
                        Expr::Column(column) => column.name.clone(),
                        _ => text,
                    };
                    columns.push(self.column(sql, expr, name)?);
                }
                SelectItem::ExprWithAlias { expr: ast, alias } => {
                    let expr = self.plan(sql, ast)?;
                    columns.push(self.column(sql, expr, alias.value)?);
                }
                SelectItem::Wildcard(_) => {
                    for field in self.df_schema.fields() {
                        let expr = Expr::Column(datafusion_common::Column::from_name(
                            field.name().clone(),
                        ));
                        columns.push(self.column(sql, expr, field.name().clone())?);
                    }
                }
                other => {
                    return Err(Error::Sql {
                        sql: sql.to_owned(),
                        message: format!("unsupported select item `{other}`"),
                    });
                }
            }
        }
        reject_duplicate_names(sql, &columns)?;
        Ok(columns)
    }

    fn column(&self, sql: &str, expr: Expr, name: String) -> Result<PlannedColumn> {
        let physical = self.physical(sql, &expr)?;
        let input_schema = self.df_schema.as_arrow();
        let field = physical
            .return_field(input_schema)
            .map_err(|err| sql_error(sql, err))?;
        Ok(PlannedColumn {
            expr: physical,
            field: field.as_ref().clone().with_name(name),
        })
    }

    fn plan(&self, sql: &str, ast: sql_ast::Expr) -> Result<Expr> {
        let planner = SqlToRel::new_with_options(&self.catalog, parser_options());
        let expr = planner
            .sql_to_expr(ast, &self.df_schema, &mut PlannerContext::new())
            .map_err(|err| sql_error(sql, err))?;
        let context = SimplifyContext::builder()
            .with_schema(Arc::new(self.df_schema.clone()))
            .build();
        let simplifier = ExprSimplifier::new(context);
        let expr = simplifier
            .coerce(expr, &self.df_schema)
            .map_err(|err| sql_error(sql, err))?;
        simplifier.simplify(expr).map_err(|err| sql_error(sql, err))
    }

    fn data_type(&self, sql: &str, expr: &Expr) -> Result<DataType> {
        use datafusion_expr::ExprSchemable;
        expr.get_type(&self.df_schema)
            .map_err(|err| sql_error(sql, err))
    }

    fn physical(&self, sql: &str, expr: &Expr) -> Result<Arc<dyn PhysicalExpr>> {
        create_physical_expr(
            expr,
            &self.df_schema,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
        .map_err(|err| sql_error(sql, err))
    }
}

fn reject_duplicate_names(sql: &str, columns: &[PlannedColumn]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for column in columns {
        if !seen.insert(column.field.name()) {
            return Err(Error::Sql {
                sql: sql.to_owned(),
                message: format!(
                    "the output column `{}` appears twice; give one of them an alias",
                    column.field.name()
                ),
            });
        }
    }
    Ok(())
}

fn sql_error(sql: &str, err: impl std::fmt::Display) -> Error {
    Error::Sql {
        sql: sql.to_owned(),
        message: err.to_string(),
    }
}

/// Parses a SQL column list such as `id BIGINT NOT NULL, email VARCHAR, created_at TIMESTAMP`
/// into an Arrow schema.
///
/// A plain `TIMESTAMP` becomes microseconds in UTC; `TIMESTAMP(3)` (milliseconds),
/// `TIMESTAMP(9)` (nanoseconds) and `TIMESTAMP WITH TIME ZONE` keep what they ask for.
pub fn parse_schema(location: &str, column_list: &str) -> Result<SchemaRef> {
    let schema_error = |message: String| Error::Schema {
        location: location.to_owned(),
        message,
    };
    let statement_text = format!("CREATE TABLE t ({column_list})");
    let mut statements = Parser::parse_sql(&GenericDialect {}, &statement_text)
        .map_err(|err| schema_error(format!("not a SQL column list: {err}")))?;
    let columns = match (statements.pop(), statements.is_empty()) {
        (Some(Statement::CreateTable(create)), true) => create.columns,
        _ => return Err(schema_error("not a SQL column list".to_owned())),
    };
    if columns.is_empty() {
        return Err(schema_error("the column list is empty".to_owned()));
    }

    let plain_timestamps: Vec<bool> = columns
        .iter()
        .map(|column| {
            matches!(
                column.data_type,
                sql_ast::DataType::Timestamp(None, sql_ast::TimezoneInfo::None)
            )
        })
        .collect();
    let catalog = FunctionCatalog::new();
    let planner = SqlToRel::new_with_options(&catalog, parser_options());
    let schema = planner
        .build_schema(columns)
        .map_err(|err| schema_error(err.to_string()))?;

    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(plain_timestamps)
        .map(|(field, plain)| {
            let field = field.as_ref().clone();
            if plain {
                field.with_data_type(DataType::Timestamp(
                    TimeUnit::Microsecond,
                    Some("UTC".into()),
                ))
            } else {
                field
            }
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};

    fn orders() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            (
                "status",
                Arc::new(StringArray::from(vec!["active", "cancelled", "active"])) as _,
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![50.0, 200.0, 150.0])) as _,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn predicate_is_coerced_and_evaluates() {
        let batch = orders();
        let planner = SqlPlanner::new(&batch.schema()).unwrap();
        let predicate = planner
            .predicate("status = 'active' AND amount > 100")
            .unwrap();
        let mask = predicate
            .evaluate(&batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        let expected = BooleanArray::from(vec![false, false, true]);
        assert_eq!(mask.as_ref(), &expected as &dyn arrow::array::Array);
    }

    #[test]
    fn non_boolean_predicate_is_rejected() {
        let planner = SqlPlanner::new(&orders().schema()).unwrap();
        let err = planner.predicate("amount + 1").unwrap_err();
        assert!(err.to_string().contains("must be boolean"), "{err}");
    }

    #[test]
    fn unknown_column_names_the_sql() {
        let planner = SqlPlanner::new(&orders().schema()).unwrap();
        let err = planner.predicate("price > 1").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("price > 1") && text.contains("price"),
            "{text}"
        );
    }

    #[test]
    fn projection_names_and_types() {
        let planner = SqlPlanner::new(&orders().schema()).unwrap();
        let columns = planner
            .projection("id, upper(status) AS status, amount * 2 AS double, amount + 1")
            .unwrap();
        let names: Vec<&str> = columns.iter().map(|c| c.field.name().as_str()).collect();
        assert_eq!(names, ["id", "status", "double", "amount + 1"]);
        assert_eq!(columns[2].field.data_type(), &DataType::Float64);
    }

    #[test]
    fn schema_list_maps_types() {
        let schema = parse_schema(
            "--schema",
            "id BIGINT NOT NULL, email VARCHAR, created_at TIMESTAMP, at_ms TIMESTAMP(3), \
             ok BOOLEAN, price DOUBLE",
        )
        .unwrap();
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            vec![
                DataType::Int64,
                DataType::Utf8,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Timestamp(TimeUnit::Millisecond, None),
                DataType::Boolean,
                DataType::Float64,
            ]
        );
        assert!(!schema.field(0).is_nullable());
        assert!(schema.field(1).is_nullable());
    }

    #[test]
    fn bad_schema_is_an_error() {
        assert!(parse_schema("--schema", "id NOTATYPE").is_err());
        assert!(parse_schema("--schema", "").is_err());
    }
}
