package encore.jvm;

import java.io.FileWriter;
import java.io.IOException;
import java.time.Instant;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;

/**
 * Read-only SQL for `encore sql-server` (the Spark Thrift Server): a session extension that wraps
 * the parser (Delta's, when listed after Delta's extension in spark.sql.extensions) and refuses
 * every statement whose parsed plan is not on an allowlist of reads, before anything runs. The
 * allowlist is encore/sql.py's, handed over by {@link #enforce} once the server has registered its
 * tables, so the registration itself is not refused and no SQL (a SET, say) can lift the check.
 *
 * With an audit file (`--allow-writes`), writes run and each one is appended to that file.
 */
public final class ReadOnlySql extends scala.runtime.AbstractFunction1 {
    private static volatile Set allowed = null;       // plan class names that read; null: not enforced yet
    private static volatile Set wrappers = new HashSet();
    private static volatile String auditFile = null;

    /** From now on, refuse plans whose root (below the wrappers) is not in {@code reads}; with an audit file, run them and log them there. */
    public static void enforce(String reads, String wrapping, String audit) {
        wrappers = new HashSet(Arrays.asList(wrapping.split(",")));
        auditFile = audit;
        allowed = new HashSet(Arrays.asList(reads.split(",")));
    }

    /** Back to not enforced (tests). */
    public static void release() {
        allowed = null;
        auditFile = null;
    }

    public Object apply(Object extensions) {
        ((SparkSessionExtensions) extensions).injectParser(new scala.runtime.AbstractFunction2() {
            public Object apply(Object session, Object delegate) {
                return new Guarded((ParserInterface) delegate);
            }
        });
        return scala.runtime.BoxedUnit.UNIT;
    }

    static String rootName(LogicalPlan plan) {
        String name = plan.getClass().getSimpleName();
        while (wrappers.contains(name) && plan.children().nonEmpty()) {   // WITH … INSERT: judge what it wraps
            plan = (LogicalPlan) plan.children().head();
            name = plan.getClass().getSimpleName();
        }
        return name;
    }

    /** The plan, if it may run; else an IllegalArgumentException saying why. */
    public static LogicalPlan check(LogicalPlan plan, String sql) {
        Set reads = allowed;
        if (reads == null) {
            return plan;
        }
        String name = rootName(plan);
        if (reads.contains(name)) {
            return plan;
        }
        String audit = auditFile;
        if (audit == null) {
            throw new IllegalArgumentException("encore sql-server is read-only: " + name + " changes data; query with "
                + "SELECT (operators who mean to write: encore sql-server --allow-writes, which is logged)");
        }
        try {
            FileWriter out = new FileWriter(audit, true);
            try {
                out.write(Instant.now().toString() + "\tsql-server\t" + sql.trim().replaceAll("\\s+", " ") + "\n");
            } finally {
                out.close();
            }
        } catch (IOException e) {
            throw new IllegalStateException("encore sql-server: cannot log a write to " + audit + " (" + e.getMessage()
                + "): the write was not run");
        }
        return plan;
    }

    /** The wrapped parser: every method delegates; the two that parse statements check their plan. */
    static final class Guarded implements ParserInterface {
        private final ParserInterface delegate;

        Guarded(ParserInterface delegate) {
            this.delegate = delegate;
        }

        public LogicalPlan parsePlan(String sql) throws ParseException {
            return check(delegate.parsePlan(sql), sql);
        }

        public LogicalPlan parsePlanWithParameters(String sql, ParameterContext parameters) throws ParseException {
            return check(delegate.parsePlanWithParameters(sql, parameters), sql);
        }

        public Expression parseExpression(String text) throws ParseException {
            return delegate.parseExpression(text);
        }

        public TableIdentifier parseTableIdentifier(String text) throws ParseException {
            return delegate.parseTableIdentifier(text);
        }

        public FunctionIdentifier parseFunctionIdentifier(String text) throws ParseException {
            return delegate.parseFunctionIdentifier(text);
        }

        public scala.collection.immutable.Seq parseMultipartIdentifier(String text) throws ParseException {
            return delegate.parseMultipartIdentifier(text);
        }

        public LogicalPlan parseQuery(String sql) throws ParseException {
            return check(delegate.parseQuery(sql), sql);
        }

        public StructType parseRoutineParam(String text) throws ParseException {
            return delegate.parseRoutineParam(text);
        }

        public StructType parseTableSchema(String text) throws ParseException {
            return delegate.parseTableSchema(text);
        }

        public DataType parseDataType(String text) throws ParseException {
            return delegate.parseDataType(text);
        }
    }
}
