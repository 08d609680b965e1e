//! What a SQL string does, according to PostgreSQL's own grammar.
//!
//! libpg_query (through `pg_query`) is the server's real parser, so ward never disagrees
//! with the server about what a statement is: comments, odd casing, quoting and
//! multi-statement strings are handled exactly as the server handles them. Each statement
//! becomes a [`CommandInfo`]: all its kinds (a DELETE hidden in a CTE, under EXPLAIN
//! ANALYZE, inside PREPARE or COPY (…) TO counts as a delete), the tables it reads and
//! writes, the functions it calls, and flags (UPDATE/DELETE without WHERE; procedural code
//! that cannot be seen through).
//!
//! Results are cached per thread by SQL text, so a workload that repeats its statements
//! (prepared or not) parses each text once. Texts that differ only in literal values (the
//! usual shape of an application's queries without bind parameters) share a second cache
//! keyed by their token stream with literals and comments left out, built with the same
//! server scanner: literals never change what a statement does, so the parse is skipped.

use pg_query::protobuf::{self, node::Node as NodeEnum};
use pg_query::{Context, NodeRef};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use ward_core::policy::{CommandInfo, Flag};

/// Distinct SQL texts remembered per thread. A workload that sends literal values inline
/// (never the same text twice) only ever costs a parse per statement; the cache is cleared
/// when full rather than tracking recency, which keeps the hit path to one hash lookup.
const CACHE_CAPACITY: usize = 8192;
/// Texts longer than this are classified but not cached (bulk INSERTs with inline data).
const CACHE_MAX_TEXT: usize = 4096;

/// The classification of one SQL string: one entry per statement, or `None` when the
/// parser rejects it.
pub type Classified = Option<Arc<[CommandInfo]>>;

thread_local! {
    static CACHE: RefCell<HashMap<Box<str>, Classified>> = RefCell::new(HashMap::new());
}

/// Classifies `sql`, using the per-thread caches.
pub fn classify(sql: &str) -> Classified {
    let cacheable = sql.len() <= CACHE_MAX_TEXT;
    if cacheable && let Some(hit) = CACHE.with(|c| c.borrow().get(sql).cloned()) {
        return hit;
    }
    let shape = if cacheable { shape_of(sql) } else { None };
    let shape_hit = shape
        .as_deref()
        .and_then(|key| CACHE.with(|c| c.borrow().get(key).cloned()));
    if let Some(hit) = shape_hit {
        // Same shape as a statement seen before: no parse, and the text itself is not kept
        // (with inline literals it will hardly ever be seen again).
        return hit;
    }
    let result = classify_uncached(sql);
    if cacheable {
        CACHE.with(|c| {
            let mut cache = c.borrow_mut();
            if cache.len() + 2 > CACHE_CAPACITY {
                cache.clear();
            }
            if let Some(key) = shape {
                cache.insert(key.into(), result.clone());
            }
            cache.insert(sql.into(), result.clone());
        });
    }
    result
}

/// Built-in functions that only compute a value from their arguments or read state, by
/// name as the parser reports it (unqualified or `pg_catalog.`-qualified). Anything else a
/// statement calls (`nextval`, `set_config`, `pg_advisory_lock`, any user function) may
/// change something, so the statement counts as a write for the audit.
#[rustfmt::skip]
const READ_ONLY_FUNCTIONS: &[&str] = &[
    "abs", "array_agg", "array_length", "avg", "bool_and", "bool_or", "btrim", "ceil",
    "char_length", "coalesce", "concat", "concat_ws", "count", "current_database",
    "current_schema", "current_setting", "date_part", "date_trunc", "every", "extract",
    "floor", "format", "greatest", "json_agg", "json_build_array", "json_build_object",
    "jsonb_agg", "jsonb_build_array", "jsonb_build_object", "least", "left", "length",
    "lower", "lpad", "ltrim", "max", "md5", "min", "now", "nullif", "pg_backend_pid",
    "position", "replace", "right", "round", "row_number", "row_to_json", "rpad", "rtrim",
    "split_part", "string_agg", "strpos", "substr", "substring", "sum", "to_char",
    "to_json", "to_jsonb", "trim", "trunc", "upper", "version",
];

/// Whether `classified` may change anything on the target: true unless every statement is
/// a plain read (SELECT, SHOW, or EXPLAIN of those) that writes no table, calls only
/// read-only built-ins and has no flags. Unparseable input counts as a write. Strict audit
/// lets reads overlap their commit with the round trip; everything else waits.
///
/// Limits, on the safe side where possible: a SELECT from a view or under a row-security
/// policy that calls a volatile function, or a user-defined operator, is not seen through
/// and counts as a read.
pub fn may_change_data(classified: &Classified) -> bool {
    let Some(commands) = classified.as_deref() else {
        return true;
    };
    commands.iter().any(|c| {
        !c.tables_written.is_empty()
            || !c.flags.is_empty()
            || c.kinds.is_empty()
            || !c
                .kinds
                .iter()
                .all(|k| matches!(*k, "select" | "show" | "explain"))
            || !c.functions.iter().all(|f| {
                let name = f.strip_prefix("pg_catalog.").unwrap_or(f);
                READ_ONLY_FUNCTIONS.binary_search(&name).is_ok()
            })
    })
}

/// The statement's token stream with literal values and comments left out, prefixed with a
/// NUL (which no SQL text contains, so shapes and texts never collide in the shared cache).
/// `None` when the scanner rejects the text.
fn shape_of(sql: &str) -> Option<String> {
    use pg_query::protobuf::Token;
    let scanned = pg_query::scan(sql).ok()?;
    let mut key = String::with_capacity(sql.len() + 1);
    key.push('\0');
    for token in &scanned.tokens {
        let text = match Token::try_from(token.token) {
            Ok(
                Token::Iconst
                | Token::Fconst
                | Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst,
            ) => "?",
            Ok(Token::SqlComment | Token::CComment) => continue,
            _ => sql.get(token.start as usize..token.end as usize)?,
        };
        key.push_str(text);
        key.push('\0');
    }
    Some(key)
}

/// Classifies without the cache (for benchmarks and tests).
pub fn classify_uncached(sql: &str) -> Classified {
    let parsed = pg_query::parse(sql).ok()?;
    let commands: Vec<CommandInfo> = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_ref().and_then(|s| s.node.as_ref()))
        .map(describe)
        .collect();
    Some(commands.into())
}

/// Describes one top-level statement.
fn describe(node: &NodeEnum) -> CommandInfo {
    let mut info = CommandInfo::default();
    info.kinds.push(top_kind(node));
    match node {
        NodeEnum::DoStmt(_)
        | NodeEnum::CallStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::CreateTrigStmt(_)
        | NodeEnum::CreateEventTrigStmt(_)
        | NodeEnum::RuleStmt(_)
        | NodeEnum::LoadStmt(_)
        | NodeEnum::CreatePlangStmt(_) => info.flags.push(Flag::Procedural),
        NodeEnum::CopyStmt(copy) => {
            if copy.is_program {
                info.flags.push(Flag::CopyProgram);
                info.flags.push(Flag::Procedural);
            }
            if let Some(rel) = &copy.relation {
                let table = range_var_name(rel);
                if copy.is_from {
                    info.tables_written.push(table);
                } else {
                    info.tables_read.push(table);
                }
            }
        }
        NodeEnum::PrepareStmt(prepare) => {
            // PREPARE p AS DELETE …: judged as what it will run.
            if let Some(inner) = prepare.query.as_ref().and_then(|q| q.node.as_ref()) {
                merge(&mut info, describe(inner));
            }
        }
        NodeEnum::TruncateStmt(t) => {
            for rel in &t.relations {
                if let Some(NodeEnum::RangeVar(rv)) = &rel.node {
                    info.tables_written.push(range_var_name(rv));
                }
            }
        }
        _ => {}
    }
    walk(node, &mut info);
    output_columns(node, &mut info);
    info.kinds.dedup();
    info
}

/// Collects [`CommandInfo::output_columns`], [`CommandInfo::select_list`] and
/// [`CommandInfo::nested_columns`]: names referenced inside select lists and RETURNING lists
/// (CTEs and subqueries included, since their outputs feed the outer query), and `*` (plus
/// `*name`) for references to a whole row.
fn output_columns(node: &NodeEnum, info: &mut CommandInfo) {
    if matches!(node, NodeEnum::ExecuteStmt(_) | NodeEnum::FetchStmt(_)) {
        // Runs a statement prepared or declared earlier, whose select list is not here:
        // its computed columns may be derived from anything.
        push_unique(&mut info.output_columns, "*");
        return;
    }
    let mut relations: Vec<String> = Vec::new();
    for (nested, _, _, _) in node.nodes() {
        match nested {
            NodeRef::RangeVar(rv) => {
                relations.push(rv.relname.to_ascii_lowercase());
                if let Some(alias) = &rv.alias {
                    relations.push(alias.aliasname.to_ascii_lowercase());
                }
            }
            NodeRef::RangeSubselect(rs) => {
                if let Some(alias) = &rs.alias {
                    relations.push(alias.aliasname.to_ascii_lowercase());
                }
            }
            NodeRef::CommonTableExpr(cte) => relations.push(cte.ctename.to_ascii_lowercase()),
            _ => {}
        }
    }
    // The top-level select list, when its entries map one to one onto result columns.
    let top: Option<&Vec<protobuf::Node>> = match node {
        NodeEnum::SelectStmt(s)
            if s.op == protobuf::SetOperation::SetopNone as i32
                && !s.target_list.iter().any(is_bare_star) =>
        {
            Some(&s.target_list)
        }
        _ => None,
    };
    let top_targets: Vec<*const protobuf::ResTarget> = top
        .map(|list| {
            list.iter()
                .filter_map(|n| match &n.node {
                    Some(NodeEnum::ResTarget(rt)) => Some(&**rt as *const _),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut per_column: Vec<Vec<String>> = vec![Vec::new(); top_targets.len()];
    for (nested, _, _, _) in node.nodes() {
        let NodeRef::ResTarget(rt) = nested else {
            continue;
        };
        let refs = references_in(rt, &relations);
        for r in &refs {
            push_unique(&mut info.output_columns, r);
        }
        match top_targets.iter().position(|&p| std::ptr::eq(p, rt)) {
            Some(i) => per_column[i] = refs,
            None => {
                for r in &refs {
                    push_unique(&mut info.nested_columns, r);
                }
            }
        }
    }
    if top.is_some() {
        info.select_list = Some(per_column);
    }
}

fn is_bare_star(node: &protobuf::Node) -> bool {
    let Some(NodeEnum::ResTarget(rt)) = &node.node else {
        return false;
    };
    matches!(
        rt.val.as_ref().and_then(|v| v.node.as_ref()),
        Some(NodeEnum::ColumnRef(c)) if c.fields.iter().any(|f| matches!(f.node, Some(NodeEnum::AStar(_))))
    )
}

/// Column names referenced in one select-list entry.
fn references_in(rt: &protobuf::ResTarget, relations: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(val) = rt.val.as_ref().and_then(|v| v.node.as_ref()) else {
        return out;
    };
    let mut refs: Vec<&protobuf::ColumnRef> = Vec::new();
    if let NodeEnum::ColumnRef(c) = val {
        refs.push(c);
    }
    for (inner, _, _, _) in val.nodes() {
        if let NodeRef::ColumnRef(c) = inner {
            refs.push(c);
        }
    }
    for c in refs {
        let names: Vec<String> = c
            .fields
            .iter()
            .filter_map(|f| match &f.node {
                Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        let star = c
            .fields
            .iter()
            .any(|f| matches!(f.node, Some(NodeEnum::AStar(_))));
        match (names.as_slice(), star) {
            // A bare `*` expands to stored columns, which keep their table of origin.
            ([], true) => {}
            ([rel, ..], true) => {
                push_unique(&mut out, "*");
                push_unique(&mut out, &format!("*{rel}"));
            }
            ([single], false) => {
                if relations.contains(single) {
                    push_unique(&mut out, "*");
                    push_unique(&mut out, &format!("*{single}"));
                }
                push_unique(&mut out, single);
            }
            (many, false) => {
                if let Some(last) = many.last() {
                    push_unique(&mut out, last);
                }
            }
        }
    }
    out
}

/// The first statement of a parse.
pub(crate) fn first_statement(parsed: &pg_query::ParseResult) -> Option<&NodeEnum> {
    parsed.protobuf.stmts.first()?.stmt.as_ref()?.node.as_ref()
}

/// For a view's definition (`pg_get_viewdef`, whose select list PostgreSQL stores with `*`
/// expanded), the column names each view column is computed from, by position.
pub fn view_column_references(definition: &str) -> Option<Vec<Vec<String>>> {
    let parsed = pg_query::parse(definition).ok()?;
    let node = first_statement(&parsed)?;
    let mut info = CommandInfo::default();
    output_columns(node, &mut info);
    let mut list = info.select_list?;
    // Names used below the top level (a view over a subquery or CTE) may reach any column.
    if !info.nested_columns.is_empty() {
        for refs in &mut list {
            for n in &info.nested_columns {
                push_unique(refs, n);
            }
        }
    }
    Some(list)
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_string());
    }
}

/// Adds nested statement kinds, tables, functions and flags found anywhere in the tree.
fn walk(node: &NodeEnum, info: &mut CommandInfo) {
    for (nested, _depth, context, _) in node.nodes() {
        match nested {
            NodeRef::InsertStmt(_) => add_kind(info, "insert"),
            NodeRef::UpdateStmt(u) => {
                add_kind(info, "update");
                if u.where_clause.is_none() {
                    add_flag(info, Flag::NoWhere);
                }
            }
            NodeRef::DeleteStmt(d) => {
                add_kind(info, "delete");
                if d.where_clause.is_none() {
                    add_flag(info, Flag::NoWhere);
                }
            }
            NodeRef::MergeStmt(_) => add_kind(info, "merge"),
            NodeRef::SelectStmt(s) if s.into_clause.is_some() => add_kind(info, "create"),
            NodeRef::RangeVar(rv) => {
                let table = range_var_name(rv);
                let list = match context {
                    Context::DML | Context::DDL => &mut info.tables_written,
                    _ => &mut info.tables_read,
                };
                if !list.contains(&table) {
                    list.push(table);
                }
            }
            NodeRef::FuncCall(call) => {
                let name = call
                    .funcname
                    .iter()
                    .filter_map(|n| match &n.node {
                        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                if !info.functions.contains(&name) {
                    info.functions.push(name);
                }
            }
            _ => {}
        }
    }
}

fn merge(into: &mut CommandInfo, from: CommandInfo) {
    for k in from.kinds {
        add_kind(into, k);
    }
    for f in from.flags {
        add_flag(into, f);
    }
    into.tables_read.extend(from.tables_read);
    into.tables_written.extend(from.tables_written);
    into.functions.extend(from.functions);
}

fn add_kind(info: &mut CommandInfo, kind: &'static str) {
    if !info.kinds.contains(&kind) {
        info.kinds.push(kind);
    }
}

fn add_flag(info: &mut CommandInfo, flag: Flag) {
    if !info.flags.contains(&flag) {
        info.flags.push(flag);
    }
}

fn range_var_name(rv: &protobuf::RangeVar) -> String {
    if rv.schemaname.is_empty() {
        rv.relname.clone()
    } else {
        format!("{}.{}", rv.schemaname, rv.relname)
    }
}

/// The kind of a top-level statement, as rules name it.
fn top_kind(node: &NodeEnum) -> &'static str {
    use NodeEnum as N;
    match node {
        N::SelectStmt(s) if s.into_clause.is_some() => "create",
        N::SelectStmt(_) | N::SetOperationStmt(_) => "select",
        N::InsertStmt(_) => "insert",
        N::UpdateStmt(_) => "update",
        N::DeleteStmt(_) => "delete",
        N::MergeStmt(_) => "merge",
        N::TruncateStmt(_) => "truncate",
        N::CopyStmt(_) => "copy",
        N::CallStmt(_) => "call",
        N::DoStmt(_) => "do",
        N::VariableSetStmt(_) | N::AlterSystemStmt(_) | N::ConstraintsSetStmt(_) => "set",
        N::VariableShowStmt(_) => "show",
        N::TransactionStmt(_) => "transaction",
        N::ExplainStmt(_) => "explain",
        N::PrepareStmt(_) => "prepare",
        N::ExecuteStmt(_) => "execute",
        N::GrantStmt(g) => {
            if g.is_grant {
                "grant"
            } else {
                "revoke"
            }
        }
        N::GrantRoleStmt(g) => {
            if g.is_grant {
                "grant"
            } else {
                "revoke"
            }
        }
        N::AlterDefaultPrivilegesStmt(_) => "grant",
        N::CreateSchemaStmt(_)
        | N::CreateStmt(_)
        | N::CreateTableSpaceStmt(_)
        | N::CreateExtensionStmt(_)
        | N::CreateFdwStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::CreateForeignTableStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CreatePolicyStmt(_)
        | N::CreateAmStmt(_)
        | N::CreateTrigStmt(_)
        | N::CreateEventTrigStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreateRoleStmt(_)
        | N::CreateSeqStmt(_)
        | N::DefineStmt(_)
        | N::CreateDomainStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::IndexStmt(_)
        | N::CreateStatsStmt(_)
        | N::CreateFunctionStmt(_)
        | N::RuleStmt(_)
        | N::CompositeTypeStmt(_)
        | N::CreateEnumStmt(_)
        | N::CreateRangeStmt(_)
        | N::ViewStmt(_)
        | N::CreatedbStmt(_)
        | N::CreateTableAsStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateCastStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreatePublicationStmt(_)
        | N::CreateSubscriptionStmt(_) => "create",
        N::AlterTableStmt(_)
        | N::AlterCollationStmt(_)
        | N::AlterDomainStmt(_)
        | N::AlterTableSpaceOptionsStmt(_)
        | N::AlterTableMoveAllStmt(_)
        | N::AlterExtensionStmt(_)
        | N::AlterExtensionContentsStmt(_)
        | N::AlterFdwStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::AlterUserMappingStmt(_)
        | N::AlterPolicyStmt(_)
        | N::AlterEventTrigStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::AlterSeqStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::AlterStatsStmt(_)
        | N::AlterFunctionStmt(_)
        | N::RenameStmt(_)
        | N::AlterObjectDependsStmt(_)
        | N::AlterObjectSchemaStmt(_)
        | N::AlterOwnerStmt(_)
        | N::AlterOperatorStmt(_)
        | N::AlterTypeStmt(_)
        | N::AlterEnumStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::AlterDatabaseRefreshCollStmt(_)
        | N::AlterDatabaseSetStmt(_)
        | N::AlterTsdictionaryStmt(_)
        | N::AlterTsconfigurationStmt(_)
        | N::AlterPublicationStmt(_)
        | N::AlterSubscriptionStmt(_)
        | N::ReplicaIdentityStmt(_)
        | N::CommentStmt(_)
        | N::SecLabelStmt(_)
        | N::RefreshMatViewStmt(_)
        | N::ReassignOwnedStmt(_) => "alter",
        N::DropStmt(_)
        | N::DropTableSpaceStmt(_)
        | N::DropUserMappingStmt(_)
        | N::DropRoleStmt(_)
        | N::DropdbStmt(_)
        | N::DropOwnedStmt(_)
        | N::DropSubscriptionStmt(_) => "drop",
        _ => "other",
    }
}

/// The kinds of a fast-path FunctionCall message: it runs a function by OID, which ward
/// cannot see into, so it is procedural.
pub fn function_call() -> CommandInfo {
    CommandInfo {
        kinds: vec!["function_call"],
        flags: vec![Flag::Procedural],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<Vec<&'static str>> {
        classify_uncached(sql)
            .unwrap_or_else(|| panic!("{sql} did not parse"))
            .iter()
            .map(|c| c.kinds.clone())
            .collect()
    }

    fn has(sql: &str, kind: &str) -> bool {
        kinds(sql).iter().flatten().any(|k| *k == kind)
    }

    #[test]
    fn evasions_of_a_delete_rule_are_still_deletes() {
        for sql in [
            "DELETE FROM orders WHERE id = 1",
            "/* hi */ dElEtE /* x */ FROM \"orders\"",
            "select 1; delete from orders",
            "WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x",
            "PREPARE p AS DELETE FROM orders WHERE id = $1",
            "EXPLAIN ANALYZE DELETE FROM orders",
            "COPY (DELETE FROM orders RETURNING *) TO STDOUT",
            "WITH a AS (SELECT 1), b AS (DELETE FROM orders RETURNING 1) SELECT * FROM a",
        ] {
            assert!(has(sql, "delete"), "{sql}: {:?}", kinds(sql));
        }
        assert!(!has("select 'delete from orders'", "delete"));
    }

    #[test]
    fn procedural_code_is_flagged() {
        for sql in [
            "DO $$ BEGIN DELETE FROM orders; END $$",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM orders'",
            "CALL cleanup()",
            "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM orders",
            "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            "COPY orders FROM PROGRAM 'rm -rf /'",
            "LOAD 'somelib'",
        ] {
            let c = classify_uncached(sql).unwrap();
            assert!(c[0].is_procedural(), "{sql}: {:?}", c[0]);
        }
        assert!(!classify_uncached("select 1").unwrap()[0].is_procedural());
    }

    #[test]
    fn read_only_allowlist_is_sorted() {
        assert!(READ_ONLY_FUNCTIONS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn only_plain_reads_may_overlap_their_commit() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "select count(*), lower(email) from customers",
            "select pg_catalog.now()",
            "show work_mem",
            "explain select * from t",
            "select * from t for update",
            "with a as (select 1) select * from a",
        ] {
            assert!(!may_change_data(&classify_uncached(sql)), "{sql}");
        }
        for sql in [
            "insert into t values (1)",
            "select nextval('s')",
            "select set_config('a.b', 'c', false)",
            "select my_func(1)",
            "public.lower(x)",
            "select public.lower('x')",
            "with d as (delete from t returning *) select * from d",
            "explain analyze delete from t",
            "select * into t2 from t",
            "select 1; delete from t",
            "begin",
            "set work_mem = '1MB'",
            "copy t to stdout",
            "do $$ begin end $$",
            "not sql at all",
        ] {
            assert!(may_change_data(&classify_uncached(sql)), "{sql}");
        }
        assert!(may_change_data(&None));
    }

    #[test]
    fn tables_where_flags_and_kinds() {
        let c = classify_uncached("update public.orders set x = 1").unwrap();
        assert_eq!(c[0].kinds, ["update"]);
        assert!(c[0].flags.contains(&Flag::NoWhere));
        assert_eq!(c[0].tables_written, ["public.orders"]);
        let c = classify_uncached("delete from orders using customers c where c.id = orders.cid")
            .unwrap();
        assert!(!c[0].flags.contains(&Flag::NoWhere));
        let c = classify_uncached("select lower(email) from customers").unwrap();
        assert_eq!(c[0].tables_read, ["customers"]);
        assert_eq!(c[0].functions, ["lower"]);
        assert_eq!(
            kinds(
                "drop table t; truncate t; create table u (a int); alter table u add b int; grant select on u to x; revoke all on u from x; begin; set x = 1; show x"
            ),
            [
                vec!["drop"],
                vec!["truncate"],
                vec!["create"],
                vec!["alter"],
                vec!["grant"],
                vec!["revoke"],
                vec!["transaction"],
                vec!["set"],
                vec!["show"]
            ]
        );
        assert_eq!(kinds("select * into newt from t")[0][0], "create");
        assert!(classify_uncached("selec 1").is_none());
    }

    #[test]
    fn statements_differing_only_in_literals_share_a_shape() {
        assert_eq!(
            shape_of("select * from t where id = 1"),
            shape_of("select  * from t /* c */ where id = 42")
        );
        assert_eq!(shape_of("select 'a'"), shape_of("select $$b$$"));
        assert_ne!(
            shape_of("select * from t where id = 1"),
            shape_of("delete from t where id = 1")
        );
        assert_ne!(
            shape_of("select \"a b\" from t"),
            shape_of("select \"a\", b from t")
        );
        // The shape cache gives the parse of the first text to later ones of the same shape.
        let first = classify("delete from t where id = 7");
        assert_eq!(classify("delete from t where id = 8"), first);
        assert_eq!(first.unwrap()[0].kinds, ["delete"]);
    }

    #[test]
    fn cache_returns_the_same_answer() {
        let a = classify("select * from t where id = 1");
        let b = classify("select * from t where id = 1");
        assert_eq!(a, b);
    }
}
#[cfg(test)]
mod output_column_tests {
    fn info(sql: &str) -> ward_core::policy::CommandInfo {
        super::classify_uncached(sql).unwrap()[0].clone()
    }

    #[test]
    fn output_columns_name_select_list_references_and_whole_rows() {
        let out = |sql: &str| info(sql).output_columns;
        assert_eq!(out("select t from customers t"), vec!["*", "*t", "t"]);
        assert_eq!(
            out("select row_to_json(c) from customers c"),
            vec!["*", "*c", "c"]
        );
        assert_eq!(
            out("select reverse(x.email) from customers x"),
            vec!["email"]
        );
        assert_eq!(
            out("select json_agg(t.*) from customers t"),
            vec!["*", "*t"]
        );
        assert!(out("select * from customers").is_empty());
        assert!(out("select count(*) from customers where email = 'x'").is_empty());
        let cte = out("with x as (select email as e from customers) select upper(e) from x");
        assert!(cte.contains(&"email".to_string()), "{cte:?}");
    }

    #[test]
    fn statements_run_from_elsewhere_taint_every_computed_column() {
        assert_eq!(info("execute p").output_columns, vec!["*"]);
        assert_eq!(info("fetch all from c").output_columns, vec!["*"]);
    }

    #[test]
    fn view_columns_map_to_what_they_are_computed_from() {
        let refs = super::view_column_references(
            " SELECT customers.id,\n    customers.notes AS n,\n    reverse(customers.secret_code) AS r\n   FROM customers;",
        )
        .unwrap();
        assert_eq!(
            refs,
            vec![
                vec!["id".to_string()],
                vec!["notes".to_string()],
                vec!["secret_code".to_string()]
            ]
        );
    }

    #[test]
    fn select_lists_map_references_to_result_columns() {
        let list = |sql: &str| info(sql).select_list;
        assert_eq!(
            list("select id, 'x' || email, count(*) from customers group by 1, 2"),
            Some(vec![
                vec!["id".to_string()],
                vec!["email".to_string()],
                vec![]
            ])
        );
        assert_eq!(list("select *, upper(name) from customers"), None);
        assert_eq!(list("select a from t union select b from u"), None);
        let nested = info("with x as (select notes as n from c) select upper(n) from x");
        assert_eq!(nested.nested_columns, vec!["notes".to_string()]);
        assert_eq!(nested.select_list, Some(vec![vec!["n".to_string()]]));
    }
}
